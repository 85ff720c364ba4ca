-- One row per user: activity in the trailing 1/7/30-day windows (var engagement_windows_days)
-- ending at as_of, the latest event time in the data (not the wall clock, so a replayed or
-- historical warehouse gives the same numbers). Users without recent events have zeros.
with b as (
    {{ latest_event_time() }}
),

e as (
    select f.user_id, f.event_type, f.is_positive, f.is_negative, f.ts
    from {{ ref('fct_interactions') }} f
    cross join b
    where f.ts > {{ ts_add('day', -(var('engagement_windows_days') | max), 'b.as_of') }}
)

select
    u.user_id,
    b.as_of,
    {{ engagement_window_columns() }}
from {{ ref('stg_users') }} u
cross join b
left join e on e.user_id = u.user_id
group by u.user_id, b.as_of
