{#-
    The rows of a raw Zoho table (leads or deals) that are still live.

    The pipeline applies Zoho's deletion log as hard deletes, so normally this filters nothing. It is the
    defensive second line: a record that the log says was deleted at or after its last modification is gone,
    even if a load left it behind (for example a partial load, or a table loaded by an older pipeline).
    A record modified after its deletion entry was restored from the recycle bin, so it stays.

    dlt creates leads/deals with their module's first record, so an org without deals yet has no deals table.
    Rather than fail the whole build, the model is then empty, with the columns declared in _zoho__sources.yml.
    (In a unit test `source()` is a fixture CTE, never looked up.)
-#}
{% macro zoho_live_records(table_name, module) -%}
    {%- set records = source('zoho', table_name) -%}
    {%- if execute and records.type != 'cte' and load_relation(records) is none -%}
    {{ zoho_empty_table(table_name) }}
    {%- else -%}
    select records.*
    from {{ records }} as records
    where not exists (
        select 1
        from {{ source('zoho', 'deleted_records') }} as deletions
        where deletions.module = '{{ module }}'
            and deletions.id = records.id
            and deletions.deleted_time >= records.modified_time
    )
    {%- endif -%}
{%- endmacro %}


{#- No rows, with the columns (and types) that _zoho__sources.yml declares for the table. -#}
{% macro zoho_empty_table(table_name) -%}
    {%- set declared = graph.sources.values() | selectattr('source_name', 'equalto', 'zoho')
        | selectattr('name', 'equalto', table_name) | first -%}
    select
    {%- for column in declared.columns.values() %}
        cast(null as {{ column.data_type }}) as {{ column.name }}{{ ',' if not loop.last }}
    {%- endfor %}
    where 1 = 0
{%- endmacro %}
