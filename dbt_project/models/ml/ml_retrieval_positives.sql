-- Retrieval training pairs: the first positive engagement of each (user, post), with the
-- time-based split of its timestamp.
with bounds as (
    {{ event_time_bounds() }}
),

firsts as (
    select user_id, post_id, min(ts) as ts
    from {{ ref('stg_events') }}
    where is_positive = 1
    group by user_id, post_id
)

select
    f.user_id,
    f.post_id,
    f.ts,
    {{ time_split('f.ts') }} as split
from firsts f
cross join bounds
