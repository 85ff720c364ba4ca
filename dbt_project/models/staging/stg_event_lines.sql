-- Every line of raw.events, typed, with the reason it is quarantined by dbt (null = valid).
-- Referential checks run on every build, since posts and users may land after their events:
--   'future ts'       ts is more than var future_tolerance_hours after the line's load
--   'unknown user_id' the user is not in stg_users
--   'unknown post_id' the post is not in stg_posts
-- (the first that applies). Retries are still here: stg_events deduplicates the valid lines.
-- The lines of a FORGOTTEN user (stg_users.is_deleted: a user tombstone landed, e.g. through
-- POST /forget) are left out altogether, neither valid nor quarantined (socialrec.data.deletion).
with typed as (
    select
        cast(event_id as {{ dbt.type_string() }}) as event_id,
        cast(user_id as {{ dbt.type_bigint() }}) as user_id,
        cast(post_id as {{ dbt.type_bigint() }}) as post_id,
        upper(cast(event_type as {{ dbt.type_string() }})) as event_type,
        cast(ts as {{ dbt.type_timestamp() }}) as ts,
        cast(dwell_ms as {{ dbt.type_bigint() }}) as dwell_ms,
        cast(variant as {{ dbt.type_string() }}) as variant,
        cast(dt as date) as dt,
        _source_file,
        cast(_line as {{ dbt.type_bigint() }}) as _line,
        cast(_loaded_at as {{ dbt.type_timestamp() }}) as _loaded_at
    from {{ source('raw', 'events') }}
    where event_id is not null
      and ts is not null
)

select
    t.event_id,
    t.user_id,
    t.post_id,
    t.event_type,
    t.ts,
    t.dwell_ms,
    t.variant,
    t.dt,
    t._source_file,
    t._line,
    t._loaded_at,
    case
        when t.ts > {{ ts_add('second', (var('future_tolerance_hours') * 3600) | int, 't._loaded_at') }}
            then 'future ts'
        when u.user_id is null then 'unknown user_id'
        when p.post_id is null then 'unknown post_id'
    end as quarantine_reason
from typed t
left join {{ ref('stg_users') }} u on u.user_id = t.user_id
left join {{ ref('stg_posts') }} p on p.post_id = t.post_id
where not coalesce(u.is_deleted, false)
