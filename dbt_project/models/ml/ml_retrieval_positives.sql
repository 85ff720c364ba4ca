-- Retrieval training pairs: the first positive engagement of each (user, post), with the
-- time-based split of its timestamp. Deleted posts are left out (never trained on).
with bounds as (
    {{ event_time_bounds() }}
),

live_posts as (
    select post_id from {{ ref('stg_posts') }} where not is_deleted
),

firsts as (
    select e.user_id, e.post_id, min(e.ts) as ts
    from {{ ref('fct_interactions') }} e
    join live_posts p on p.post_id = e.post_id
    where e.is_positive = 1
    group by e.user_id, e.post_id
)

select
    f.user_id,
    f.post_id,
    f.ts,
    {{ time_split('f.ts') }} as split
from firsts f
cross join bounds
