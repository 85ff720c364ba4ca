-- Point-in-time sanity of ml_ranking_samples: a user's or post's earliest row has no prior
-- events, and the prior counts never exceed the totals (dim_users / dim_posts).
{{ config(meta={'dagster': {'ref': {'name': 'ml_ranking_samples'}}}) }}
with firsts as (
    select user_id, min(ts) as first_ts from {{ ref('fct_interactions') }} group by user_id
)

select s.user_id, s.post_id, s.ts, 'prior events at the first event' as problem
from {{ ref('ml_ranking_samples') }} s
join firsts f on f.user_id = s.user_id and f.first_ts = s.ts
where s.user_prior_events > 0

union all

select s.user_id, s.post_id, s.ts, 'more prior than total' as problem
from {{ ref('ml_ranking_samples') }} s
join {{ ref('dim_users') }} u on u.user_id = s.user_id
join {{ ref('dim_posts') }} p on p.post_id = s.post_id
where s.user_prior_events >= u.n_events
   or s.user_prior_positives > s.user_prior_events
   or s.user_category_prior_positives > s.user_prior_positives
   or s.post_prior_impressions > p.n_impressions
   or s.post_prior_positives > p.n_positives
