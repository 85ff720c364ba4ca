-- Typed posts, one row per post_id (the most recently loaded version wins).
with ranked as (
    select
        *,
        row_number() over (
            partition by post_id
            order by _loaded_at desc, _source_file desc
        ) as _rn
    from {{ source('raw', 'posts') }}
    where post_id is not null
)

select
    cast(post_id as {{ dbt.type_bigint() }}) as post_id,
    cast(creator_id as {{ dbt.type_bigint() }}) as creator_id,
    cast(category_id as {{ dbt.type_bigint() }}) as category_id,
    lower(cast(media_type as {{ dbt.type_string() }})) as media_type,
    coalesce(cast(description as {{ dbt.type_string() }}), '') as description,
    cast(created_at as {{ dbt.type_timestamp() }}) as created_at
from ranked
where _rn = 1
