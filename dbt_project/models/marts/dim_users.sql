-- One row per user (deleted ones included, flagged by is_deleted): the latest profile plus
-- lifetime activity counts. positive_rate = positive events / impressions (0 without).
with activity as (
    select
        user_id,
        count(*) as n_events,
        sum(case when event_type = 'IMPRESSION' then 1 else 0 end) as n_impressions,
        sum(is_positive) as n_positives,
        sum(is_negative) as n_negatives,
        max(ts) as last_event_ts
    from {{ ref('fct_interactions') }}
    group by user_id
)

select
    u.user_id,
    u.created_at,
    u.headline,
    u.about,
    u.onboarding_categories,
    cast(coalesce(a.n_events, 0) as {{ dbt.type_bigint() }}) as n_events,
    cast(coalesce(a.n_impressions, 0) as {{ dbt.type_bigint() }}) as n_impressions,
    cast(coalesce(a.n_positives, 0) as {{ dbt.type_bigint() }}) as n_positives,
    {{ safe_rate('a.n_positives', 'a.n_impressions') }} as positive_rate,
    a.last_event_ts,
    cast(coalesce(a.n_negatives, 0) as {{ dbt.type_bigint() }}) as n_negatives,
    u.is_deleted,
    u.updated_at
from {{ ref('stg_users') }} u
left join activity a on a.user_id = u.user_id
