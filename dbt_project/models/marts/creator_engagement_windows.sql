-- One row per creator (a user_id with at least one post): engagement received on all of the
-- creator's posts in the trailing 1/7/30-day windows (var engagement_windows_days) ending at
-- as_of, the latest event time in the data; n_posts = the creator's posts (deleted included).
with b as (
    {{ latest_event_time() }}
),

creators as (
    select creator_id, count(*) as n_posts
    from {{ ref('stg_posts') }}
    where creator_id is not null
    group by creator_id
),

e as (
    select p.creator_id, f.event_type, f.is_positive, f.is_negative, f.ts
    from {{ ref('fct_interactions') }} f
    join {{ ref('stg_posts') }} p on p.post_id = f.post_id
    cross join b
    where f.ts > {{ ts_add('day', -(var('engagement_windows_days') | max), 'b.as_of') }}
)

select
    c.creator_id,
    cast(c.n_posts as {{ dbt.type_bigint() }}) as n_posts,
    b.as_of,
    {{ engagement_window_columns() }}
from creators c
cross join b
left join e on e.creator_id = c.creator_id
group by c.creator_id, c.n_posts, b.as_of
