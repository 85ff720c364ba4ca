-- One row per post (deleted ones included, flagged by is_deleted): the latest attributes plus
-- lifetime engagement counts per event type and rates per impression (0 without impressions).
-- n_views counts VIEW and VIEW_FULL; positive_rate = positive events / impressions.
with engagement as (
    select
        post_id,
        sum(case when event_type = 'IMPRESSION' then 1 else 0 end) as n_impressions,
        sum(case when event_type in ('VIEW', 'VIEW_FULL') then 1 else 0 end) as n_views,
        sum(case when event_type = 'LIKE' then 1 else 0 end) as n_likes,
        sum(is_positive) as n_positives,
        sum(is_negative) as n_negatives,
        sum(case when event_type = 'VIEW_FULL' then 1 else 0 end) as n_full_views,
        sum(case when event_type = 'COMMENT' then 1 else 0 end) as n_comments,
        sum(case when event_type = 'SHARE' then 1 else 0 end) as n_shares,
        sum(case when event_type = 'BOOKMARK' then 1 else 0 end) as n_bookmarks,
        sum(case when event_type = 'DISLIKE' then 1 else 0 end) as n_dislikes,
        sum(case when event_type = 'REPORT' then 1 else 0 end) as n_reports,
        count(distinct user_id) as n_users,
        sum(relevance) as relevance,
        max(ts) as last_event_ts
    from {{ ref('fct_interactions') }}
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
    {{ safe_rate('e.n_positives', 'e.n_impressions') }} as positive_rate,
    cast(coalesce(e.n_full_views, 0) as {{ dbt.type_bigint() }}) as n_full_views,
    cast(coalesce(e.n_comments, 0) as {{ dbt.type_bigint() }}) as n_comments,
    cast(coalesce(e.n_shares, 0) as {{ dbt.type_bigint() }}) as n_shares,
    cast(coalesce(e.n_bookmarks, 0) as {{ dbt.type_bigint() }}) as n_bookmarks,
    cast(coalesce(e.n_dislikes, 0) as {{ dbt.type_bigint() }}) as n_dislikes,
    cast(coalesce(e.n_reports, 0) as {{ dbt.type_bigint() }}) as n_reports,
    cast(coalesce(e.n_users, 0) as {{ dbt.type_bigint() }}) as n_users,
    {{ safe_rate('e.n_views', 'e.n_impressions') }} as view_rate,
    {{ safe_rate('e.n_likes', 'e.n_impressions') }} as like_rate,
    {{ safe_rate('e.n_comments', 'e.n_impressions') }} as comment_rate,
    {{ safe_rate('e.n_shares', 'e.n_impressions') }} as share_rate,
    {{ safe_rate('e.n_bookmarks', 'e.n_impressions') }} as bookmark_rate,
    {{ safe_rate('e.n_negatives', 'e.n_impressions') }} as negative_rate,
    cast(coalesce(e.relevance, 0) as {{ type_double() }}) as relevance,
    e.last_event_ts,
    c.name as category_name,
    p.is_deleted,
    p.updated_at
from {{ ref('stg_posts') }} p
left join engagement e on e.post_id = p.post_id
left join {{ ref('stg_categories') }} c on c.category_id = p.category_id
