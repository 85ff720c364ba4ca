-- Ranking samples: one row per (user, post) that had an exposure (an IMPRESSION, or a VIEW for
-- logs without impressions) or a positive/negative engagement, deleted posts left out.
-- label 1 = any positive event; 0 = an exposure without a positive, or any negative event
-- (negatives win over positives). relevance = the sum of the pair's event weights
-- (var relevance_weights: VIEW 0.5 ... SHARE 3, DISLIKE -2, REPORT -4), the graded target of a
-- ranking objective. ts is the pair's first event (the exposure), split is the time-based
-- split of ts.
--
-- Point-in-time features: counts over the events STRICTLY BEFORE the row's ts (events at the
-- same instant are not "before"), so a row never sees its own or any later event. Each is a
-- running sum over the distinct timestamps of a user / post / (user, category), read at ts
-- (ts is one of the timestamps of the user, of the post and of the pair's category).
with bounds as (
    {{ event_time_bounds() }}
),

events as (
    select
        e.user_id,
        e.post_id,
        p.category_id,
        p.is_deleted,
        e.ts,
        e.is_positive,
        e.is_negative,
        e.relevance,
        case when e.event_type = 'IMPRESSION' then 1 else 0 end as is_impression,
        case when e.event_type in ('IMPRESSION', 'VIEW') then 1 else 0 end as is_exposure
    from {{ ref('fct_interactions') }} e
    join {{ ref('stg_posts') }} p on p.post_id = e.post_id
),

pairs as (
    select
        user_id,
        post_id,
        category_id,
        min(ts) as ts,
        max(is_positive) as has_positive,
        max(is_negative) as has_negative,
        sum(relevance) as relevance
    from events
    where not is_deleted
      and (is_exposure = 1 or is_positive = 1 or is_negative = 1)
    group by user_id, post_id, category_id
),

user_steps as (
    select
        user_id,
        ts,
        count(*) as n_events,
        sum(is_impression) as n_impressions,
        sum(is_positive) as n_positives
    from events
    group by user_id, ts
),

user_prior as (
    select
        user_id,
        ts,
        sum(n_events) over (
            partition by user_id order by ts rows between unbounded preceding and 1 preceding
        ) as user_prior_events,
        sum(n_impressions) over (
            partition by user_id order by ts rows between unbounded preceding and 1 preceding
        ) as user_prior_impressions,
        sum(n_positives) over (
            partition by user_id order by ts rows between unbounded preceding and 1 preceding
        ) as user_prior_positives
    from user_steps
),

post_steps as (
    select
        post_id,
        ts,
        sum(is_impression) as n_impressions,
        sum(is_positive) as n_positives,
        sum(is_negative) as n_negatives
    from events
    group by post_id, ts
),

post_prior as (
    select
        post_id,
        ts,
        sum(n_impressions) over (
            partition by post_id order by ts rows between unbounded preceding and 1 preceding
        ) as post_prior_impressions,
        sum(n_positives) over (
            partition by post_id order by ts rows between unbounded preceding and 1 preceding
        ) as post_prior_positives,
        sum(n_negatives) over (
            partition by post_id order by ts rows between unbounded preceding and 1 preceding
        ) as post_prior_negatives
    from post_steps
),

user_category_steps as (
    select user_id, category_id, ts, sum(is_positive) as n_positives
    from events
    group by user_id, category_id, ts
),

user_category_prior as (
    select
        user_id,
        category_id,
        ts,
        sum(n_positives) over (
            partition by user_id, category_id
            order by ts rows between unbounded preceding and 1 preceding
        ) as user_category_prior_positives
    from user_category_steps
)

select
    p.user_id,
    p.post_id,
    p.ts,
    cast(
        case when p.has_negative = 1 then 0 when p.has_positive = 1 then 1 else 0 end
        as {{ dbt.type_int() }}
    ) as label,
    {{ time_split('p.ts') }} as split,
    cast(p.relevance as {{ type_double() }}) as relevance,
    cast(coalesce(up.user_prior_events, 0) as {{ dbt.type_bigint() }}) as user_prior_events,
    cast(coalesce(up.user_prior_impressions, 0) as {{ dbt.type_bigint() }}) as user_prior_impressions,
    cast(coalesce(up.user_prior_positives, 0) as {{ dbt.type_bigint() }}) as user_prior_positives,
    cast(coalesce(pp.post_prior_impressions, 0) as {{ dbt.type_bigint() }}) as post_prior_impressions,
    cast(coalesce(pp.post_prior_positives, 0) as {{ dbt.type_bigint() }}) as post_prior_positives,
    cast(coalesce(pp.post_prior_negatives, 0) as {{ dbt.type_bigint() }}) as post_prior_negatives,
    cast(coalesce(uc.user_category_prior_positives, 0) as {{ dbt.type_bigint() }})
        as user_category_prior_positives
from pairs p
cross join bounds
left join user_prior up on up.user_id = p.user_id and up.ts = p.ts
left join post_prior pp on pp.post_id = p.post_id and pp.ts = p.ts
left join user_category_prior uc
    on uc.user_id = p.user_id and uc.category_id = p.category_id and uc.ts = p.ts
