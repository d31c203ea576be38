{#- The post-hook of every model: on PostgreSQL, ANALYZE a table a build has just written. The models after it
    read it at once, long before autovacuum gets to it, and planned against a new table without statistics
    (int_sync_context's one row, a day's changed deals) PostgreSQL chose plans that took int_deal_history's
    daily query from about 1 s to 5 s. A view has no statistics of its own; DuckDB keeps its own as it writes. -#}
{% macro refresh_statistics(relation) -%}
    {{- return(adapter.dispatch('refresh_statistics', 'crm_intelligence')(relation)) -}}
{%- endmacro %}


{% macro default__refresh_statistics(relation) -%}
    select 1
{%- endmacro %}


{% macro postgres__refresh_statistics(relation) -%}
    {%- if config.get('materialized') in ('table', 'incremental') -%}
        analyze {{ relation }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
