{#-
    One row per day from start_date to end_date (both included), in a column named calendar_date.

    `start_date` and `end_date` are expressions over the single-row relation `bounds_relation`. generate_series
    over timestamps with a lateral join reads the same on PostgreSQL and DuckDB; another warehouse (Snowflake,
    BigQuery) gets its own implementation through adapter.dispatch.
-#}
{% macro calendar_days(bounds_relation, start_date, end_date) -%}
    {{- return(adapter.dispatch('calendar_days', 'crm_intelligence')(bounds_relation, start_date, end_date)) -}}
{%- endmacro %}


{% macro default__calendar_days(bounds_relation, start_date, end_date) -%}
    select cast(series.day_start as date) as calendar_date

    from {{ bounds_relation }}
    cross join lateral generate_series(
        cast({{ start_date }} as timestamp),
        cast({{ end_date }} as timestamp),
        interval '1 day'
    ) as series (day_start)
{%- endmacro %}
