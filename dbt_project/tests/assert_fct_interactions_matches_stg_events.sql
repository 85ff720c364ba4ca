-- The incremental fct_interactions holds exactly the events of stg_events, in the same dt:
-- nothing missing, nothing stale, nothing in two days (what a full refresh would give).
{{ config(meta={'dagster': {'ref': {'name': 'fct_interactions'}}}) }}
select
    coalesce(s.event_id, f.event_id) as event_id,
    s.dt as stg_dt,
    f.dt as fct_dt
from {{ ref('stg_events') }} s
full outer join {{ ref('fct_interactions') }} f on f.event_id = s.event_id
where s.event_id is null or f.event_id is null or s.dt <> f.dt
