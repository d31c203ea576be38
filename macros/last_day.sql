{#- The pre-hook of a model that adds days: remove the last day it holds (the last build's partial day, which
    the syncs since may have changed) and anything after it, so the build writes them again with the days
    since. Days before it were complete when they were written and never change. -#}
{% macro delete_from_last_day(relation, day_column='calendar_date') -%}
    {%- if is_incremental() -%}
        delete from {{ relation }} where {{ day_column }} >= (select max({{ day_column }}) from {{ relation }})
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{#- The days a build of such a model adds: those after the last one the pre-hook kept (all on a first build). -#}
{% macro after_last_kept_day(relation, day_expression, day_column='calendar_date') -%}
    {%- if is_incremental() -%}
        {{ day_expression }} > (select coalesce(max({{ day_column }}), cast('1900-01-01' as date)) from {{ relation }})
    {%- else -%}
        1 = 1
    {%- endif -%}
{%- endmacro %}


{#- The config of a model that adds days this way, in one place for each such model: appended, the last day
    removed first under the build lock, an index on the day on PostgreSQL (postgres_only_indexes), and
    `more_indexes`. -#}
{% macro adds_days_config(day_column='calendar_date', more_indexes=[]) -%}
    {{- return({
        "materialized": "incremental",
        "incremental_strategy": "append",
        "on_schema_change": "append_new_columns",
        "indexes": postgres_only_indexes([day_column]) + more_indexes,
        "pre_hook": ["{{ build_lock(this) }}", "{{ delete_from_last_day(this, '" ~ day_column ~ "') }}"],
    }) -}}
{%- endmacro %}
