{#- The pre-hook of a model that adds days: remove the last day it holds (the last build's partial day, which
    the syncs since may have changed) and anything after it, so the build writes them again with the days
    since. Days before it were complete when they were written and never change.
    With `upstream` (a model kept record by record) and `key`: of that last day, only the rows of the records
    `upstream` rewrote since this model's last build. Every other record's state at the end of that day is the
    one the last build wrote: a record changes only through a version a later sync brings, and then `upstream`
    rewrites it. The model adds that day back for those records only (last_kept_day). -#}
{% macro delete_from_last_day(relation, day_column='calendar_date', upstream=none, key=none) -%}
    {%- if is_incremental() -%}
        delete from {{ relation }} where {{ day_column }} >= (select max({{ day_column }}) from {{ relation }})
        {%- if upstream is not none %}
            and {{ key }} in ({{ keys_rewritten_since_last_build(upstream, key) }})
        {%- endif -%}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{#- The last day a model that adds days holds when its build starts (before its pre-hook runs), as a literal date
    for the model's SQL; none on a first build or a full refresh, or for an empty table. -#}
{% macro last_kept_day(relation, day_column='calendar_date') -%}
    {%- if not execute or not is_incremental() -%}
        {{- return(none) -}}
    {%- endif -%}
    {%- set day = run_query("select max(" ~ day_column ~ ") from " ~ relation).columns[0].values()[0] -%}
    {{- return(none if day is none else "cast('" ~ day ~ "' as date)") -}}
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
    removed first under the build lock (only the records `upstream` rewrote, by `key`, when given: see
    delete_from_last_day), an index on the day on PostgreSQL (postgres_only_indexes), and `more_indexes`. -#}
{% macro adds_days_config(day_column='calendar_date', more_indexes=[], upstream=none, key=none) -%}
    {%- set changed = "" if upstream is none else ", ref('" ~ upstream ~ "'), '" ~ key ~ "'" -%}
    {{- return({
        "materialized": "incremental",
        "incremental_strategy": "append",
        "on_schema_change": "append_new_columns",
        "indexes": postgres_only_indexes([day_column]) + more_indexes,
        "pre_hook": ["{{ build_lock(this) }}",
                     "{{ delete_from_last_day(this, '" ~ day_column ~ "'" ~ changed ~ ") }}"],
    }) -}}
{%- endmacro %}
