-- A forgotten user (stg_users.is_deleted: a user tombstone landed) has no fact, no ML row and
-- no quarantined line left (socialrec.data.deletion).
{{ config(meta={'dagster': {'ref': {'name': 'ml_ranking_samples'}}}) }}
with forgotten as (
    select user_id from {{ ref('stg_users') }} where is_deleted
)

select 'fct_interactions' as model, f.user_id
from {{ ref('fct_interactions') }} f join forgotten g on g.user_id = f.user_id

union all

select 'ml_ranking_samples' as model, s.user_id
from {{ ref('ml_ranking_samples') }} s join forgotten g on g.user_id = s.user_id

union all

select 'ml_retrieval_positives' as model, r.user_id
from {{ ref('ml_retrieval_positives') }} r join forgotten g on g.user_id = r.user_id

union all

select 'quarantined_events' as model, q.user_id
from {{ ref('quarantined_events') }} q join forgotten g on g.user_id = q.user_id
