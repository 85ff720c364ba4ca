{#- Small cross-database helpers (DuckDB locally, BigQuery in production). -#}

{% macro type_double() %}
  {{ return(adapter.dispatch('type_double')()) }}
{% endmacro %}

{% macro default__type_double() %}{{ return(dbt.type_float()) }}{% endmacro %}

{% macro duckdb__type_double() %}{{ return('double') }}{% endmacro %}


{#- A quoted SQL list of the strings in a project var, e.g. ('LIKE', 'COMMENT'). -#}
{% macro sql_list(var_name) -%}
  ({% for v in var(var_name) %}'{{ v }}'{% if not loop.last %}, {% endif %}{% endfor %})
{%- endmacro %}


{#- 1 when the event type is a positive (resp. negative) engagement, else 0. -#}
{% macro is_positive(event_type) -%}
  case when {{ event_type }} in {{ sql_list('positive_events') }} then 1 else 0 end
{%- endmacro %}

{% macro is_negative(event_type) -%}
  case when {{ event_type }} in {{ sql_list('negative_events') }} then 1 else 0 end
{%- endmacro %}


{#-
  The global temporal split of the ML datasets by EVENT QUANTILE (model ml_split_bounds): the
  last var('test_fraction') of the events by time are 'test', the var('validation_fraction')
  before them 'validation', the rest 'train'. `bounds` is a relation alias with the columns
  validation_start and test_start (event_time_bounds() selects them).
-#}
{% macro time_split(ts, bounds='bounds') -%}
  case
    when {{ ts }} < {{ bounds }}.validation_start then 'train'
    when {{ ts }} < {{ bounds }}.test_start then 'validation'
    else 'test'
  end
{%- endmacro %}


{#- The bounds relation time_split expects: the one row of ml_split_bounds. -#}
{% macro event_time_bounds() -%}
  select validation_start, test_start from {{ ref('ml_split_bounds') }}
{%- endmacro %}


{#- The q-quantile (0..1) of a timestamp column, an aggregate (one of its values). -#}
{% macro ts_quantile(ts, q) -%}
  {{ return(adapter.dispatch('ts_quantile')(ts, q)) }}
{%- endmacro %}

{% macro default__ts_quantile(ts, q) -%}
  quantile_disc({{ ts }}, {{ q }})
{%- endmacro %}

{% macro bigquery__ts_quantile(ts, q) -%}
  approx_quantiles({{ ts }}, 1000)[offset({{ (q * 1000) | round | int }})]
{%- endmacro %}


{#-
  `ts` shifted by `n` units of `datepart` ('hour', 'day'), as a TIMESTAMP on every adapter
  (dbt.dateadd returns a DATETIME on BigQuery, which does not compare with a TIMESTAMP).
-#}
{% macro ts_add(datepart, n, ts) -%}
  cast({{ dbt.dateadd(datepart, n, ts) }} as {{ dbt.type_timestamp() }})
{%- endmacro %}


{#- num / den as a double, 0 when den is 0 or null. -#}
{% macro safe_rate(num, den) -%}
  cast(
    case when coalesce({{ den }}, 0) > 0 then coalesce({{ num }}, 0) * 1.0 / {{ den }} else 0 end
    as {{ type_double() }}
  )
{%- endmacro %}


{#- The numeric relevance of one event type (var relevance_weights; 0 for an unknown type). -#}
{% macro relevance_weight(event_type) -%}
  cast(
    case {{ event_type }}
      {%- for name, weight in var('relevance_weights').items() %}
      when '{{ name }}' then {{ weight }}
      {%- endfor %}
      else 0
    end
    as {{ type_double() }}
  )
{%- endmacro %}


{#- sum(case when <condition> then 1 else 0 end) as a BIGINT, 0 for an empty group. -#}
{% macro count_if(condition) -%}
  cast(coalesce(sum(case when {{ condition }} then 1 else 0 end), 0) as {{ dbt.type_bigint() }})
{%- endmacro %}


{#-
  Engagement counts over the trailing windows of var engagement_windows_days, relative to
  `as_of` (the latest event time in the data): an event is in the N-day window when
  as_of - N days < ts <= as_of. For every N: n_events_Nd, n_impressions_Nd, n_positives_Nd,
  n_negatives_Nd and positive_rate_Nd (positives / impressions, 0 without impressions).
  `e` is the alias of the events relation (columns ts, event_type, is_positive, is_negative).
-#}
{% macro engagement_window_columns(e='e', as_of='b.as_of') -%}
  {%- for n in var('engagement_windows_days') %}
    {%- set in_window = e ~ '.ts > ' ~ ts_add('day', -n, as_of) %}
    {{ count_if(in_window) }} as n_events_{{ n }}d,
    {{ count_if(in_window ~ " and " ~ e ~ ".event_type = 'IMPRESSION'") }} as n_impressions_{{ n }}d,
    {{ count_if(in_window ~ " and " ~ e ~ ".is_positive = 1") }} as n_positives_{{ n }}d,
    {{ count_if(in_window ~ " and " ~ e ~ ".is_negative = 1") }} as n_negatives_{{ n }}d,
    {{ safe_rate(
        "sum(case when " ~ in_window ~ " and " ~ e ~ ".is_positive = 1 then 1 else 0 end)",
        "sum(case when " ~ in_window ~ " and " ~ e ~ ".event_type = 'IMPRESSION' then 1 else 0 end)"
    ) }} as positive_rate_{{ n }}d
    {%- if not loop.last %},{% endif %}
  {%- endfor %}
{%- endmacro %}


{#- The as_of relation engagement_window_columns expects: the latest event time. -#}
{% macro latest_event_time() -%}
  select max(ts) as as_of from {{ ref('fct_interactions') }}
{%- endmacro %}


{#-
  "Latest version wins" for the posts / users upserts of raw.<table>: one row per `id` from
  the versions in `versions` (a CTE with columns updated_at, is_deleted, _source_file, _line).
  Ranks 1 = the latest updated_at, ties broken by the later _source_file, then the later _line.
-#}
{% macro version_rank(id) -%}
  row_number() over (
    partition by {{ id }}
    order by updated_at desc, _source_file desc, _line desc
  )
{%- endmacro %}


{#-
  raw.quarantine (the loaders' parse failures). Not a dbt source on purpose: Dagster maps each
  source to one asset and every raw_* asset writes this table; the models reading it also
  depend on raw.events / raw.posts / raw.users through stg_event_lines.
-#}
{% macro raw_quarantine() -%}
  {{ return(api.Relation.create(
      database=target.database, schema=var('raw_schema', 'raw'), identifier='quarantine')) }}
{%- endmacro %}


{#-
  Point-in-time activity of one entity kind (`entity_id`: user_id for the user's own events,
  post_id for the events a post received): one row per (entity, day with events) with the
  cumulative counts up to the END of that day, valid from `valid_from` (the next midnight).
-#}
{% macro daily_activity(entity_id) -%}
with daily as (
    select
        {{ entity_id }},
        cast(ts as date) as day,
        count(*) as n_events,
        sum(case when event_type = 'IMPRESSION' then 1 else 0 end) as n_impressions,
        sum(is_positive) as n_positives,
        sum(is_negative) as n_negatives
    from {{ ref('fct_interactions') }}
    group by {{ entity_id }}, cast(ts as date)
),

cumulative as (
    select
        {{ entity_id }},
        day,
        sum(n_events) over w as n_events,
        sum(n_impressions) over w as n_impressions,
        sum(n_positives) over w as n_positives,
        sum(n_negatives) over w as n_negatives
    from daily
    window w as (partition by {{ entity_id }} order by day rows between unbounded preceding and current row)
)

select
    {{ entity_id }},
    day,
    {{ ts_add('day', 1, 'cast(day as ' ~ dbt.type_timestamp() ~ ')') }} as valid_from,
    cast(n_events as {{ dbt.type_bigint() }}) as n_events,
    cast(n_impressions as {{ dbt.type_bigint() }}) as n_impressions,
    cast(n_positives as {{ dbt.type_bigint() }}) as n_positives,
    cast(n_negatives as {{ dbt.type_bigint() }}) as n_negatives,
    {{ safe_rate('n_positives', 'n_impressions') }} as positive_rate
from cumulative
{%- endmacro %}


{#-
  The smoothed affinity of a user toward a `key` (category_id, creator_id): CTEs `totals` and
  `affinity_prior` (a key's share of all positives, add-one smoothed) over a `pairs` relation
  with columns user_id, <key>, n_positives; and the score expression, for a `p` (pairs),
  `u` (user_totals: user_positives) and `c` (affinity_prior) join:
  (n_positives + s * prior) / (user_positives + s), s = var affinity_prior_strength.
-#}
{% macro affinity_prior_ctes(key) -%}
totals as (
    select sum(n_positives) as all_positives, count(distinct {{ key }}) as n_keys
    from pairs
),

affinity_prior as (
    select
        p.{{ key }},
        (sum(p.n_positives) + 1.0) / (max(t.all_positives) + max(t.n_keys)) as prior
    from pairs p
    cross join totals t
    group by p.{{ key }}
)
{%- endmacro %}

{% macro affinity_score() -%}
    cast(
        (p.n_positives + {{ var('affinity_prior_strength') }} * c.prior)
        / (u.user_positives + {{ var('affinity_prior_strength') }})
        as {{ type_double() }}
    )
{%- endmacro %}


{#-
  A bound of the Wilson score interval (95% by default) of the proportion x / n: `side` is
  'lower' or 'upper'; null when n is 0 or null. Portable: sqrt and arithmetic only.
    (p + z^2/(2n) -/+ z * sqrt(p(1-p)/n + z^2/(4n^2))) / (1 + z^2/n),  p = x/n
-#}
{% macro wilson_bound(x, n, side, z=1.959964) -%}
  {%- set p = '(' ~ x ~ ' * 1.0 / ' ~ n ~ ')' -%}
  {%- set z2 = z * z -%}
  cast(
    case when coalesce({{ n }}, 0) > 0 then
      ({{ p }} + {{ z2 }} / (2.0 * {{ n }})
        {{ '-' if side == 'lower' else '+' }} {{ z }} * sqrt(
          {{ p }} * (1 - {{ p }}) / {{ n }} + {{ z2 }} / (4.0 * {{ n }} * {{ n }})))
      / (1 + {{ z2 }} / {{ n }})
    end
    as {{ type_double() }}
  )
{%- endmacro %}
