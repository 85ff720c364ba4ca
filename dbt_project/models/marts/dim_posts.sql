-- One row per post: attributes plus lifetime engagement counts.
-- n_views counts VIEW and VIEW_FULL; positive_rate = positive events / impressions (0 without).
with engagement as (
    select
        post_id,
        sum(case when event_type = 'IMPRESSION' then 1 else 0 end) as n_impressions,
        sum(case when event_type in ('VIEW', 'VIEW_FULL') then 1 else 0 end) as n_views,
        sum(case when event_type = 'LIKE' then 1 else 0 end) as n_likes,
        sum(is_positive) as n_positives,
        sum(is_negative) as n_negatives
    from {{ ref('stg_events') }}
    group by post_id
)

select
    p.post_id,
    p.creator_id,
    p.category_id,
    p.media_type,
    p.description,
    p.created_at,
    cast(coalesce(e.n_impressions, 0) as {{ dbt.type_bigint() }}) as n_impressions,
    cast(coalesce(e.n_views, 0) as {{ dbt.type_bigint() }}) as n_views,
    cast(coalesce(e.n_likes, 0) as {{ dbt.type_bigint() }}) as n_likes,
    cast(coalesce(e.n_positives, 0) as {{ dbt.type_bigint() }}) as n_positives,
    cast(coalesce(e.n_negatives, 0) as {{ dbt.type_bigint() }}) as n_negatives,
    cast(
        case when coalesce(e.n_impressions, 0) > 0
            then e.n_positives * 1.0 / e.n_impressions else 0 end
        as {{ type_double() }}
    ) as positive_rate
from {{ ref('stg_posts') }} p
left join engagement e on e.post_id = p.post_id
