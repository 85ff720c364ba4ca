-- The lines of raw.events that dbt quarantines, with the first reason that applies:
-- 'future ts' (stamped more than var future_tolerance_hours after its load), 'unknown user_id'
-- (not in stg_users), 'unknown post_id' (not in stg_posts). Re-checked on every build: a line
-- leaves this table once its post or user lands.
select
    event_id,
    user_id,
    post_id,
    event_type,
    ts,
    dt,
    _source_file,
    _line,
    _loaded_at,
    quarantine_reason as reason
from {{ ref('stg_event_lines') }}
where quarantine_reason is not null
