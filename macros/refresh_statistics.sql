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


{#- Run at the start of every build (on-run-start): on PostgreSQL, fresh statistics for the column that tells the
    syncs apart (_dlt_load_id) in the raw tables that have it. The models kept record by record read the rows of
    the syncs since their last build, and a new sync's load id is unknown to the statistics: PostgreSQL then
    expects one row to carry it and checks each of a day's 20,000 changed leads against the whole deletion log
    (a nested loop that took 165 s at two million leads, where a hash join takes under one). Autovacuum would
    only analyze the table after a tenth of it changed. ANALYZE of that one column samples each table: about 1 s
    for all of them at that size. A table the build's role does not own is skipped with a warning. -#}
{% macro refresh_sync_statistics() -%}
    {{- return(adapter.dispatch('refresh_sync_statistics', 'crm_intelligence')()) -}}
{%- endmacro %}


{% macro default__refresh_sync_statistics() -%}
    select 1
{%- endmacro %}


{% macro postgres__refresh_sync_statistics() -%}
    {%- set tables = [] -%}
    {%- set sources = graph.sources.values() if execute else [] -%}
    {%- for node in sources if node.source_name == 'zoho' and '_dlt_load_id' in node.columns -%}
        {%- set relation = adapter.get_relation(node.database, node.schema, node.identifier) -%}
        {%- if relation is not none -%}
            {%- do tables.append(relation ~ " (_dlt_load_id)") -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if tables -%}
        analyze {{ tables | join(', ') }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
