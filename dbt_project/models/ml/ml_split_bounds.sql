-- The global temporal split of the ML datasets, by EVENT QUANTILE over fct_interactions: test =
-- the last var('test_fraction') of the events by time, validation = the var('validation_fraction')
-- before them, train = the rest. Both boundaries are floored to the UTC day when that keeps
-- every split non-empty and ordered (daily partitions and the daily feature histories, valid
-- from midnight, then line up with the split: "as of the test start" is one feature snapshot);
-- otherwise (a log of a day or two) they are the exact quantile timestamps.
-- One row; the ML models join it (macro event_time_bounds), the Python side reads it
-- (socialrec.evaluation.protocol) so there is one definition of the split.
with quantiles as (
    select
        min(ts) as data_start,
        max(ts) as data_end,
        count(*) as n_events,
        {{ ts_quantile('ts', 1 - var('validation_fraction') - var('test_fraction')) }}
            as q_validation,
        {{ ts_quantile('ts', 1 - var('test_fraction')) }} as q_test
    from {{ ref('fct_interactions') }}
),

floored as (
    select
        *,
        {{ dbt.date_trunc('day', 'q_validation') }} as validation_day,
        {{ dbt.date_trunc('day', 'q_test') }} as test_day
    from quantiles
),

bounds as (
    select
        data_start,
        data_end,
        n_events,
        case
            when validation_day > data_start and validation_day < test_day then validation_day
            else q_validation
        end as validation_start,
        case
            when validation_day > data_start and validation_day < test_day then test_day
            else q_test
        end as test_start
    from floored
)

select
    b.data_start,
    b.validation_start,
    b.test_start,
    b.data_end,
    b.n_events,
    cast(sum(case when e.ts >= b.validation_start and e.ts < b.test_start then 1 else 0 end)
        as {{ type_double() }}) / nullif(b.n_events, 0) as validation_share,
    cast(sum(case when e.ts >= b.test_start then 1 else 0 end) as {{ type_double() }})
        / nullif(b.n_events, 0) as test_share
from bounds b
cross join {{ ref('fct_interactions') }} e
group by b.data_start, b.validation_start, b.test_start, b.data_end, b.n_events
