-- Typed user profiles, one row per user_id (the most recently loaded version wins).
with ranked as (
    select
        *,
        row_number() over (
            partition by user_id
            order by _loaded_at desc, _source_file desc
        ) as _rn
    from {{ source('raw', 'users') }}
    where user_id is not null
)

select
    cast(user_id as {{ dbt.type_bigint() }}) as user_id,
    cast(created_at as {{ dbt.type_timestamp() }}) as created_at,
    coalesce(cast(headline as {{ dbt.type_string() }}), '') as headline,
    coalesce(cast(about as {{ dbt.type_string() }}), '') as about,
    coalesce(cast(onboarding_categories as {{ dbt.type_string() }}), '') as onboarding_categories
from ranked
where _rn = 1
