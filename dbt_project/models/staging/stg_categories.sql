-- The category catalogue, one row per category_id.
with ranked as (
    select
        *,
        row_number() over (partition by category_id order by name) as _rn
    from {{ source('raw', 'categories') }}
    where category_id is not null
)

select
    cast(category_id as {{ dbt.type_bigint() }}) as category_id,
    cast(name as {{ dbt.type_string() }}) as name
from ranked
where _rn = 1
