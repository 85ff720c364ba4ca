-- One row per (user, creator) where the user interacted with the creator's posts (a user's
-- events on their own posts are left out). affinity_score: the user's share of positive events
-- that went to the creator, smoothed toward the creator's global share of positives with var
-- affinity_prior_strength pseudo-events:
--   (n_positives + k * creator_prior) / (user_positives + k)
with events as (
    select e.user_id, p.creator_id, e.post_id, e.event_type, e.is_positive, e.is_negative, e.ts
    from {{ ref('fct_interactions') }} e
    join {{ ref('stg_posts') }} p on p.post_id = e.post_id
    where p.creator_id is not null and p.creator_id <> e.user_id
),

pairs as (
    select
        user_id,
        creator_id,
        count(*) as n_events,
        count(distinct post_id) as n_posts,
        sum(case when event_type = 'IMPRESSION' then 1 else 0 end) as n_impressions,
        sum(is_positive) as n_positives,
        sum(is_negative) as n_negatives,
        max(ts) as last_event_ts
    from events
    group by user_id, creator_id
),

user_totals as (
    select user_id, sum(n_positives) as user_positives
    from pairs
    group by user_id
),

{{ affinity_prior_ctes('creator_id') }}

select
    p.user_id,
    p.creator_id,
    cast(p.n_events as {{ dbt.type_bigint() }}) as n_events,
    cast(p.n_posts as {{ dbt.type_bigint() }}) as n_posts,
    cast(p.n_impressions as {{ dbt.type_bigint() }}) as n_impressions,
    cast(p.n_positives as {{ dbt.type_bigint() }}) as n_positives,
    cast(p.n_negatives as {{ dbt.type_bigint() }}) as n_negatives,
    {{ safe_rate('p.n_positives', 'p.n_impressions') }} as positive_rate,
    {{ affinity_score() }} as affinity_score,
    p.last_event_ts
from pairs p
join user_totals u on u.user_id = p.user_id
join affinity_prior c on c.creator_id = p.creator_id
