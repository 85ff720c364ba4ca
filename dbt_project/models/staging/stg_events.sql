-- Typed events, deduplicated by event_id: a client retry lands the same event twice, the
-- earliest load (then the earliest file and line) is kept.
with typed as (
    select
        cast(event_id as {{ dbt.type_string() }}) as event_id,
        cast(user_id as {{ dbt.type_bigint() }}) as user_id,
        cast(post_id as {{ dbt.type_bigint() }}) as post_id,
        upper(cast(event_type as {{ dbt.type_string() }})) as event_type,
        cast(ts as {{ dbt.type_timestamp() }}) as ts,
        cast(dwell_ms as {{ dbt.type_bigint() }}) as dwell_ms,
        dt,
        _source_file,
        _line,
        _loaded_at
    from {{ source('raw', 'events') }}
    where event_id is not null
      and user_id is not null
      and post_id is not null
      and ts is not null
),

ranked as (
    select
        *,
        row_number() over (
            partition by event_id
            order by _loaded_at, _source_file, _line
        ) as _rn
    from typed
)

select
    event_id,
    user_id,
    post_id,
    event_type,
    ts,
    dwell_ms,
    {{ is_positive('event_type') }} as is_positive,
    {{ is_negative('event_type') }} as is_negative,
    dt,
    _source_file,
    _loaded_at
from ranked
where _rn = 1
