-- Typed, valid events, deduplicated by event_id: a client retry lands the same event twice, the
-- earliest load (then the earliest file and line) is kept. Lines quarantined by dbt (unknown
-- user or post, future ts: see stg_event_lines / quarantined_events) are left out.
with ranked as (
    select
        *,
        row_number() over (
            partition by event_id
            order by _loaded_at, _source_file, _line
        ) as _rn
    from {{ ref('stg_event_lines') }}
    where quarantine_reason is null
)

select
    event_id,
    user_id,
    post_id,
    event_type,
    ts,
    dwell_ms,
    variant,
    {{ is_positive('event_type') }} as is_positive,
    {{ is_negative('event_type') }} as is_negative,
    dt,
    _source_file,
    _line,
    _loaded_at
from ranked
where _rn = 1
