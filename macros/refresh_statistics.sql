{#- The post-hook of every model: on PostgreSQL, ANALYZE a table a build has just written. The models after it
    read it at once, long before autovacuum gets to it, and planned against a new table without statistics
    (int_sync_context's one row, a day's changed deals) PostgreSQL chose plans several times slower for
    int_deal_history's daily query. A view has no statistics of its own; DuckDB keeps its own as it writes. -#}
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
    (a nested loop over the whole log for each lead, where a hash join reads it once). Autovacuum would only
    analyze the table after a tenth of it changed. ANALYZE of that one column samples each table, so its cost
    does not grow with the table. A table the build's role does not own is skipped with a warning. -#}
{% macro refresh_sync_statistics() -%}
    {{- return(adapter.dispatch('refresh_sync_statistics', 'crm_intelligence')()) -}}
{%- endmacro %}


{% macro default__refresh_sync_statistics() -%}
    select 1
{%- endmacro %}


{% macro postgres__refresh_sync_statistics() -%}
    {%- set columns = [] -%}
    {%- for relation in raw_tables_with_load_ids() -%}
        {%- do columns.append(relation ~ " (_dlt_load_id)") -%}
    {%- endfor -%}
    {%- if columns -%}
        analyze {{ columns | join(', ') }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{#- Run at the start of every build (on-run-start), before refresh_sync_statistics: on PostgreSQL, an index on
    _dlt_load_id in each raw table that has it, made once. Each day the models kept record by record and the key
    tests over new syncs (unique_in_new_loads) pick a day's rows out of the raw tables by load id; without an
    index each of those reads scanned the whole table, however few rows the day brought. The index is named for the table and only made when missing, so a build that finds it takes
    no lock on the raw table. A table the build's role does not own keeps working without one (a warning says
    so). DuckDB needs none: dlt appends each load's rows together, and its min/max per row group skips the
    rest. -#}
{% macro index_sync_columns() -%}
    {{- return(adapter.dispatch('index_sync_columns', 'crm_intelligence')()) -}}
{%- endmacro %}


{% macro default__index_sync_columns() -%}
    select 1
{%- endmacro %}


{% macro postgres__index_sync_columns() -%}
    {%- set relations = raw_tables_with_load_ids() -%}
    {%- if relations %}
    do $$
    begin
    {%- for relation in relations %}
        {%- set index = relation.identifier ~ '__dlt_load_id_idx' %}
        begin
            if to_regclass('{{ adapter.quote(relation.schema) }}.{{ adapter.quote(index) }}') is null then
                create index {{ adapter.quote(index) }} on {{ relation }} (_dlt_load_id);
            end if;
        exception when insufficient_privilege then
            raise warning 'no index on %: the build''s role does not own it', '{{ relation }}';
        end;
    {%- endfor %}
    end
    $$
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{#- The raw tables (source zoho) that exist and carry dlt's _dlt_load_id. -#}
{% macro raw_tables_with_load_ids() -%}
    {%- set relations = [] -%}
    {%- set sources = graph.sources.values() if execute else [] -%}
    {%- for node in sources if node.source_name == 'zoho' and '_dlt_load_id' in node.columns -%}
        {%- set relation = adapter.get_relation(node.database, node.schema, node.identifier) -%}
        {%- if relation is not none -%}
            {%- do relations.append(relation) -%}
        {%- endif -%}
    {%- endfor -%}
    {{- return(relations) -}}
{%- endmacro %}
