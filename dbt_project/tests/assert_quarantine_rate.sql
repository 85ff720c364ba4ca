-- WARNS when the share of quarantined event lines (parse failures of the loader plus the events
-- dbt rejects, see the quarantine model) among all landed event lines exceeds
-- var quarantine_warn_rate (default: SOCIALREC_QUARANTINE_WARN_RATE, else 0.05).
{{ config(severity='warn', meta={'dagster': {'ref': {'name': 'quarantine'}}}) }}
with lines as (
    select
        (select count(*) from {{ source('raw', 'events') }}) as n_loaded,
        (select count(*) from {{ ref('quarantine') }}
          where dataset = 'events' and detected_by = 'loader') as n_unparsed,
        (select count(*) from {{ ref('quarantine') }}
          where dataset = 'events' and detected_by = 'dbt') as n_rejected
)

select
    n_loaded + n_unparsed as n_lines,
    n_unparsed + n_rejected as n_quarantined,
    (n_unparsed + n_rejected) * 1.0 / (n_loaded + n_unparsed) as quarantine_rate
from lines
where n_loaded + n_unparsed > 0
  and (n_unparsed + n_rejected) * 1.0 / (n_loaded + n_unparsed)
      > {{ var('quarantine_warn_rate', env_var('SOCIALREC_QUARANTINE_WARN_RATE', '0.05')) }}
