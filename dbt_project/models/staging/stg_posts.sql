-- Posts are upserts: raw.posts holds every version (line) of every post. One row per post_id:
-- the descriptive attributes come from the latest version that is not a tombstone, is_deleted
-- and updated_at from the latest version overall. "Latest" = the latest updated_at, ties broken
-- by the later _source_file, then the later _line. A post known only from tombstones has no
-- attributes and is left out (its events are quarantined as 'unknown post_id'). A DELETED post
-- (the latest version is a tombstone, e.g. POST /posts/delete) keeps its category and creator
-- (its past events still count for them) but its text is blanked (socialrec.data.deletion).
with versions as (
    select
        cast(post_id as {{ dbt.type_bigint() }}) as post_id,
        cast(creator_id as {{ dbt.type_bigint() }}) as creator_id,
        cast(category_id as {{ dbt.type_bigint() }}) as category_id,
        lower(cast(media_type as {{ dbt.type_string() }})) as media_type,
        coalesce(cast(description as {{ dbt.type_string() }}), '') as description,
        cast(created_at as {{ dbt.type_timestamp() }}) as created_at,
        cast(coalesce(updated_at, created_at, _loaded_at) as {{ dbt.type_timestamp() }}) as updated_at,
        coalesce(is_deleted, false) as is_deleted,
        _source_file,
        _line
    from {{ source('raw', 'posts') }}
    where post_id is not null
),

latest as (
    select post_id, updated_at, is_deleted, {{ version_rank('post_id') }} as _rn
    from versions
),

latest_live as (
    select *, {{ version_rank('post_id') }} as _rn
    from versions
    where not is_deleted
),

n_versions as (
    select post_id, count(*) as n_versions
    from versions
    group by post_id
)

select
    a.post_id,
    a.creator_id,
    a.category_id,
    a.media_type,
    case when l.is_deleted then '' else a.description end as description,
    a.created_at,
    l.updated_at,
    l.is_deleted,
    cast(n.n_versions as {{ dbt.type_bigint() }}) as n_versions
from latest_live a
join latest l on l.post_id = a.post_id and l._rn = 1
join n_versions n on n.post_id = a.post_id
where a._rn = 1
