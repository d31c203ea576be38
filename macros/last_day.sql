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
