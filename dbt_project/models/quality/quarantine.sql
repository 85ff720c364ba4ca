-- Every quarantined landing line in one place: the parse failures of the raw loaders
-- (raw.quarantine: bad JSON, unknown event_type, missing ids, bad or future timestamps; every
-- dataset) and the events dbt rejects (quarantined_events: unknown user or post, future ts).
-- raw.quarantine is read through the raw_quarantine() macro, not as a dbt source (see there).
select
    cast(dataset as {{ dbt.type_string() }}) as dataset,
    cast(source_file as {{ dbt.type_string() }}) as source_file,
    cast(line as {{ dbt.type_bigint() }}) as line,
    cast(reason as {{ dbt.type_string() }}) as reason,
    cast('loader' as {{ dbt.type_string() }}) as detected_by,
    cast(_loaded_at as {{ dbt.type_timestamp() }}) as _loaded_at
from {{ raw_quarantine() }}

union all

select
    cast('events' as {{ dbt.type_string() }}) as dataset,
    _source_file as source_file,
    _line as line,
    reason,
    cast('dbt' as {{ dbt.type_string() }}) as detected_by,
    _loaded_at
from {{ ref('quarantined_events') }}
