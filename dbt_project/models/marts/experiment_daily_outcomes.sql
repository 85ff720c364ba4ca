-- Per experiment arm and day: what the arm showed and how people answered (docs/experiments.md).
-- The unit is an exposure: a (variant, user, post) the arm showed (an IMPRESSION event carrying
-- that variant), counted on the day of its first impression. It is positive when the user
-- engaged positively with the post (var positive_events) and negative when they disliked or
-- reported it (var negative_events), in events carrying the same variant, whenever they came.
-- Rates are shares of exposures, with Wilson 95% score intervals. Events without a variant
-- (older clients) are not part of any arm and are left out.
with pairs as (
    select
        variant,
        user_id,
        post_id,
        min(case when event_type = 'IMPRESSION' then ts end) as first_impression,
        max(is_positive) as positive,
        max(is_negative) as negative
    from {{ ref('fct_interactions') }}
    where variant is not null
    group by variant, user_id, post_id
),

daily as (
    select
        variant,
        cast(first_impression as date) as day,
        count(*) as impressions,
        sum(positive) as positives,
        sum(negative) as negatives,
        count(distinct user_id) as users
    from pairs
    where first_impression is not null
    group by variant, cast(first_impression as date)
)

select
    variant,
    day,
    cast(users as {{ dbt.type_bigint() }}) as users,
    cast(impressions as {{ dbt.type_bigint() }}) as impressions,
    cast(positives as {{ dbt.type_bigint() }}) as positives,
    cast(negatives as {{ dbt.type_bigint() }}) as negatives,
    {{ safe_rate('positives', 'impressions') }} as positive_rate,
    {{ wilson_bound('positives', 'impressions', 'lower') }} as positive_rate_lower,
    {{ wilson_bound('positives', 'impressions', 'upper') }} as positive_rate_upper,
    {{ safe_rate('negatives', 'impressions') }} as negative_rate,
    {{ wilson_bound('negatives', 'impressions', 'lower') }} as negative_rate_lower,
    {{ wilson_bound('negatives', 'impressions', 'upper') }} as negative_rate_upper
from daily
