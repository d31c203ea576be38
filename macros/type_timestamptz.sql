{#-
    The type of an instant. dbt.type_timestamp() is `timestamp` *without* time zone on PostgreSQL, which would
    drop the UTC offset dlt loaded; `timestamp with time zone` means the same thing on PostgreSQL and DuckDB.
-#}
{% macro type_timestamptz() -%}
    {{- return(adapter.dispatch('type_timestamptz', 'crm_intelligence')()) -}}
{%- endmacro %}


{% macro default__type_timestamptz() -%}
    timestamp with time zone
{%- endmacro %}
