{#-
  The BigQuery emulator of the tests (BIGQUERY_EMULATOR_HOST set) cannot run one statement of
  dbt-bigquery's dynamic insert_overwrite (fct_interactions' incremental runs), the one that
  lists the partitions to replace:
      set (dbt_partitions_for_replacement) = (
          select as struct array_agg(distinct date(dt) IGNORE NULLS) from <tmp>);
  (its SQLGlot parser rejects `IGNORE NULLS` inside an aggregate with DISTINCT, and `SET (v) =
  (SELECT AS STRUCT ...)` leaves an array of arrays in v). Against the emulator only, that
  statement becomes the equivalent
      set dbt_partitions_for_replacement = (
          select array_agg(distinct date(dt)) from <tmp> where date(dt) is not null);
  Against BigQuery the script is dbt-bigquery's own, untouched (tests/test_dbt_bigquery.py
  checks both texts). Every other statement of the script runs as is on the emulator.
-#}
{% macro bq_dynamic_insert_overwrite_sql(tmp_relation, target_relation, sql, unique_key, partition_by, dest_columns, tmp_relation_exists, copy_partitions) %}
  {%- set script = dbt.bq_dynamic_insert_overwrite_sql(tmp_relation, target_relation, sql, unique_key, partition_by, dest_columns, tmp_relation_exists, copy_partitions) -%}
  {%- if env_var('BIGQUERY_EMULATOR_HOST', '') and not copy_partitions -%}
    {%- set pattern = modules.re.compile(
        'set \\(dbt_partitions_for_replacement\\) = \\(\\s*select as struct\\s*(?:--[^\\n]*\\n\\s*)?'
        ~ 'array_agg\\(distinct (.+?) IGNORE NULLS\\)\\s*from (\\S+)\\s*\\);') -%}
    {%- if not pattern.search(script) -%}
      {{ exceptions.raise_compiler_error(
          "bigquery_emulator.sql: dbt-bigquery's insert_overwrite script changed; "
          ~ "update the emulator rewrite") }}
    {%- endif -%}
    {%- set script = pattern.sub(
        'set dbt_partitions_for_replacement = (select array_agg(distinct \\1) from \\2 '
        ~ 'where \\1 is not null);', script) -%}
  {%- endif -%}
  {{ return(script) }}
{% endmacro %}
