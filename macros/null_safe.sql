{#- a = b, where two nulls are equal too. `is not distinct from` reads the same on PostgreSQL and DuckDB;
    another warehouse (BigQuery, older Snowflake) gets its own spelling through adapter.dispatch. -#}
{% macro null_safe_equals(left, right) -%}
    {{- return(adapter.dispatch('null_safe_equals', 'crm_intelligence')(left, right)) -}}
{%- endmacro %}


{% macro default__null_safe_equals(left, right) -%}
    {{ left }} is not distinct from {{ right }}
{%- endmacro %}
