{#-
  Incremental by landing day (dt). A run re-processes (deletes and re-inserts) every dt that
    * has raw.events lines loaded after the latest _loaded_at already in the table (a new file,
      a late file into an old dt, a reloaded partition), or
    * holds an event that is in stg_events but not here, or here in another dt (e.g. its post
      landed after it, so it is valid now; or the kept copy of a retry moved to another file).
  A pre-hook first deletes the rows whose event is no longer in stg_events (its line was removed
  or quarantined), so a dt that lost all its events is right too. `dbt build --full-refresh`
  rebuilds everything.
  DuckDB: delete+insert keyed on dt; BigQuery: insert_overwrite of the dt partitions.
-#}
-- depends_on: {{ source('raw', 'events') }}
{{
  config(
    materialized='incremental',
    incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'delete+insert'),
    unique_key=(none if target.type == 'bigquery' else 'dt'),
    partition_by=({'field': 'dt', 'data_type': 'date'} if target.type == 'bigquery' else none),
    cluster_by=(['user_id'] if target.type == 'bigquery' else none),
    on_schema_change='append_new_columns',
    pre_hook=[
      "{% if is_incremental() %}delete from {{ this }} where event_id not in (select event_id from {{ ref('stg_events') }}){% endif %}"
    ]
  )
}}

with events as (
    select * from {{ ref('stg_events') }}
)

{% if is_incremental() %},

watermark as (
    select max(_loaded_at) as max_loaded_at from {{ this }}
),

changed_days as (
    select r.dt
    from {{ source('raw', 'events') }} r
    cross join watermark w
    where w.max_loaded_at is null or r._loaded_at > w.max_loaded_at

    union all

    select s.dt
    from events s
    left join {{ this }} t on t.event_id = s.event_id
    where t.event_id is null or t.dt <> s.dt

    union all

    select t.dt
    from {{ this }} t
    join events s on s.event_id = t.event_id
    where t.dt <> s.dt
),

days as (
    select distinct cast(dt as date) as dt from changed_days
)
{% endif %}

select
    e.event_id,
    e.user_id,
    e.post_id,
    e.event_type,
    e.ts,
    e.dwell_ms,
    e.variant,
    e.is_positive,
    e.is_negative,
    {{ relevance_weight('e.event_type') }} as relevance,
    e.dt,
    e._source_file,
    e._line,
    e._loaded_at
from events e
{% if is_incremental() %}
where e.dt in (select dt from days)
{% endif %}
