-- Users are upserts: raw.users holds every version (line) of every profile. One row per user_id:
-- the profile comes from the latest version that is not a tombstone, is_deleted and updated_at
-- from the latest version overall. "Latest" = the latest updated_at, ties broken by the later
-- _source_file, then the later _line. A user known only from tombstones is left out (their
-- events are quarantined as 'unknown user_id'). A FORGOTTEN user (the latest version is a
-- tombstone, e.g. POST /forget) keeps the row, flagged, with the profile text blanked: nothing
-- personal reaches dim_users or the text embeddings (socialrec.data.deletion).
with versions as (
    select
        cast(user_id as {{ dbt.type_bigint() }}) as user_id,
        cast(created_at as {{ dbt.type_timestamp() }}) as created_at,
        coalesce(cast(headline as {{ dbt.type_string() }}), '') as headline,
        coalesce(cast(about as {{ dbt.type_string() }}), '') as about,
        coalesce(cast(onboarding_categories as {{ dbt.type_string() }}), '') as onboarding_categories,
        cast(coalesce(updated_at, created_at, _loaded_at) as {{ dbt.type_timestamp() }}) as updated_at,
        coalesce(is_deleted, false) as is_deleted,
        _source_file,
        _line
    from {{ source('raw', 'users') }}
    where user_id is not null
),

latest as (
    select user_id, updated_at, is_deleted, {{ version_rank('user_id') }} as _rn
    from versions
),

latest_live as (
    select *, {{ version_rank('user_id') }} as _rn
    from versions
    where not is_deleted
),

n_versions as (
    select user_id, count(*) as n_versions
    from versions
    group by user_id
)

select
    a.user_id,
    a.created_at,
    case when l.is_deleted then '' else a.headline end as headline,
    case when l.is_deleted then '' else a.about end as about,
    case when l.is_deleted then '' else a.onboarding_categories end as onboarding_categories,
    l.updated_at,
    l.is_deleted,
    cast(n.n_versions as {{ dbt.type_bigint() }}) as n_versions
from latest_live a
join latest l on l.user_id = a.user_id and l._rn = 1
join n_versions n on n.user_id = a.user_id
where a._rn = 1
