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
  The time-based split of the ML datasets: the first train_fraction of the event time range
  [t_min, t_max] is 'train', the next validation_fraction 'validation', the rest 'test'.
  `bounds` is a relation alias with columns t_min and span_s (seconds from t_min to t_max).
-#}
{% macro time_split(ts, bounds='bounds') -%}
  case
    when {{ bounds }}.span_s = 0
      or {{ dbt.datediff(bounds ~ '.t_min', ts, 'second') }}
         < {{ var('train_fraction') }} * {{ bounds }}.span_s then 'train'
    when {{ dbt.datediff(bounds ~ '.t_min', ts, 'second') }}
         < ({{ var('train_fraction') }} + {{ var('validation_fraction') }}) * {{ bounds }}.span_s
      then 'validation'
    else 'test'
  end
{%- endmacro %}


{#- The bounds relation time_split expects, over stg_events. -#}
{% macro event_time_bounds() -%}
  select
    min(ts) as t_min,
    max(ts) as t_max,
    {{ dbt.datediff('min(ts)', 'max(ts)', 'second') }} as span_s
  from {{ ref('stg_events') }}
{%- endmacro %}
