-- No ML row is about a deleted post (a deleted post is never trained on).
{{ config(meta={'dagster': {'ref': {'name': 'ml_ranking_samples'}}}) }}
select 'ml_ranking_samples' as model, s.user_id, s.post_id
from {{ ref('ml_ranking_samples') }} s
join {{ ref('stg_posts') }} p on p.post_id = s.post_id
where p.is_deleted

union all

select 'ml_retrieval_positives' as model, r.user_id, r.post_id
from {{ ref('ml_retrieval_positives') }} r
join {{ ref('stg_posts') }} p on p.post_id = r.post_id
where p.is_deleted
