-- One row per post: engagement received in the trailing 1/7/30-day windows
-- (var engagement_windows_days) ending at as_of, the latest event time in the data. Posts
-- without recent events have zeros; deleted posts are included (see dim_posts.is_deleted).
with b as (
    {{ latest_event_time() }}
),

e as (
    select f.post_id, f.event_type, f.is_positive, f.is_negative, f.ts
    from {{ ref('fct_interactions') }} f
    cross join b
    where f.ts > {{ ts_add('day', -(var('engagement_windows_days') | max), 'b.as_of') }}
)

select
    p.post_id,
    b.as_of,
    {{ engagement_window_columns() }}
from {{ ref('stg_posts') }} p
cross join b
left join e on e.post_id = p.post_id
group by p.post_id, b.as_of
