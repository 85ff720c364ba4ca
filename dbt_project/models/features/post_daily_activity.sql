-- Point-in-time engagement of each post: one row per (post, day with events) holding the
-- cumulative counts of everything up to the END of that day, valid from `valid_from` (the
-- next midnight). A point-in-time join (Feast) on a timestamp t therefore reads only events
-- of days that ended before t: no feature ever sees its own label's day or the future.
with daily as (
    select
        post_id,
        cast(ts as date) as day,
        count(*) as n_events,
        sum(case when event_type = 'IMPRESSION' then 1 else 0 end) as n_impressions,
        sum(is_positive) as n_positives,
        sum(is_negative) as n_negatives
    from {{ ref('fct_interactions') }}
    group by post_id, cast(ts as date)
),

cumulative as (
    select
        post_id,
        day,
        sum(n_events) over w as n_events,
        sum(n_impressions) over w as n_impressions,
        sum(n_positives) over w as n_positives,
        sum(n_negatives) over w as n_negatives
    from daily
    window w as (partition by post_id order by day rows between unbounded preceding and current row)
)

select
    post_id,
    day,
    {{ ts_add('day', 1, 'cast(day as ' ~ dbt.type_timestamp() ~ ')') }} as valid_from,
    cast(n_events as {{ dbt.type_bigint() }}) as n_events,
    cast(n_impressions as {{ dbt.type_bigint() }}) as n_impressions,
    cast(n_positives as {{ dbt.type_bigint() }}) as n_positives,
    cast(n_negatives as {{ dbt.type_bigint() }}) as n_negatives,
    {{ safe_rate('n_positives', 'n_impressions') }} as positive_rate
from cumulative
