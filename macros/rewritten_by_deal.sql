{#-
    Models kept deal by deal: int_deal_history and what is worked out from it one deal at a time. A deal's rows
    depend only on that deal's versions, Stage History and deletion (and on the stage layout and the home
    currency), so a build rewrites the rows of the deals whose inputs changed since the last build and leaves
    every other deal's rows as they are: after a day on which 1% of the deals changed, 1% of the rows are
    written. `dbt build --full-refresh` rewrites every deal.
-#}

{#- The config of such a model: delete+insert on deal_id (all rows of a changed deal go, and its rows are written
    again, however many it has now), under the build lock; an index on deal_id for PostgreSQL's delete. -#}
{% macro rewritten_by_deal_config() -%}
    {{- return({
        "materialized": "incremental",
        "incremental_strategy": "delete+insert",
        "unique_key": "deal_id",
        "on_schema_change": "append_new_columns",
        "indexes": [{"columns": ["deal_id"]}],
        "pre_hook": ["{{ build_lock(this) }}"],
    }) -}}
{%- endmacro %}


{#- When this build started, as a timestamp column: the rows a build writes carry it, so the models read from
    them (and the tests of the last build's rows) know which ones are new. -#}
{% macro build_started_at() -%}
    cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S") }}' as {{ dbt.type_timestamp() }})
{%- endmacro %}


{#- Whether a build of this model must write every deal: a first build or full refresh, or a table written by
    an older version of the model (without `column`, which every row of this version has). -#}
{% macro rewrites_every_deal(column='built_at') -%}
    {%- if not is_incremental() or this is none -%}
        {{- return(true) -}}
    {%- endif -%}
    {%- if not execute -%}
        {{- return(false) -}}
    {%- endif -%}
    {%- set columns = adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
    {{- return(column | lower not in columns) -}}
{%- endmacro %}


{#- The filter of a model worked out from another kept deal by deal (`upstream`, whose rows carry built_at):
    the deals whose rows there were written after this model's last build. -#}
{% macro deals_rewritten_since_last_build(upstream, deal_id='deal_id') -%}
    {%- if rewrites_every_deal() -%}
        1 = 1
    {%- else -%}
        {{ deal_id }} in (
            select deal_id
            from {{ upstream }}
            where built_at > (select coalesce(max(built_at), cast('1900-01-01' as {{ dbt.type_timestamp() }})) from {{ this }})
        )
    {%- endif -%}
{%- endmacro %}


{#- A small number that changes when anything a deal's classified history depends on, other than its own
    records, changes: the stage layout (which stage is open, won or lost, and in which order), the home currency
    and the org's time zone. Rows carry it; a build whose number differs from theirs rewrites every deal. -#}
{% macro definitions_fingerprint(stages, context) -%}
    {%- if not execute or stages.type == 'cte' -%}
        {{- return(0) -}}
    {%- endif -%}
    {%- set layout = run_query(
        "select stage_id, pipeline, stage, stage_order, forecast_type from " ~ stages ~ " order by stage_id"
    ) -%}
    {%- set currency = run_query("select home_currency_code from " ~ context) -%}
    {%- set described = [org_timezone()] -%}
    {%- for row in layout.rows -%}
        {%- do described.append(row.values() | join('|')) -%}
    {%- endfor -%}
    {%- for row in currency.rows -%}
        {%- do described.append(row.values() | join('|')) -%}
    {%- endfor -%}
    {#- Seven hex digits: a positive number that fits a 32-bit integer column on every warehouse. -#}
    {{- return(local_md5(described | join('\n'))[:7] | int(base=16)) -}}
{%- endmacro %}


{#- Whether any row of this model was written under other definitions than `fingerprint`. -#}
{% macro definitions_changed(fingerprint) -%}
    {%- set written_under_others = run_query(
        "select 1 from " ~ this ~ " where definitions_fingerprint <> " ~ fingerprint ~ " limit 1"
    ) -%}
    {{- return(written_under_others.rows | length > 0) -}}
{%- endmacro %}
