-- Ranking samples: one row per (user, post) that had an impression or a positive/negative
-- engagement. label 1 = any positive event; 0 = an impression without a positive, or any
-- negative event (negatives win over positives). ts is the pair's first event (the exposure),
-- split is the time-based split of ts.
with bounds as (
    {{ event_time_bounds() }}
),

pairs as (
    select
        user_id,
        post_id,
        min(ts) as ts,
        max(is_positive) as has_positive,
        max(is_negative) as has_negative
    from {{ ref('stg_events') }}
    where event_type = 'IMPRESSION' or is_positive = 1 or is_negative = 1
    group by user_id, post_id
)

select
    p.user_id,
    p.post_id,
    p.ts,
    cast(
        case when p.has_negative = 1 then 0 when p.has_positive = 1 then 1 else 0 end
        as {{ dbt.type_int() }}
    ) as label,
    {{ time_split('p.ts') }} as split
from pairs p
cross join bounds
