{#-
    Models kept record by record: int_deal_history and what is worked out from it one deal at a time, the current
    deals (int_deals_joined_to_stages, int_deals_in_home_currency, the deals mart) and the leads (int_leads_seen,
    the leads mart). A record's rows depend only on that record's versions (and, for a deal, its Stage History
    and deletion), besides a few org-wide definitions: the stage layout, the home currency, the time zone and,
    for the sanity rules, the org's first record day, its users and the day of the sync. So a build rewrites the
    rows of the records whose inputs changed since the last build and leaves every other record's rows as they
    are: after a day on which 1% of the deals changed, 1% of the rows are written. A change of the definitions
    rewrites every record; `dbt build --full-refresh` too.
-#}

{#- The config of such a model: delete+insert on the record's key (all rows of a changed record go, and its rows
    are written again, however many it has now), under the build lock.
    On PostgreSQL (postgres_only_indexes) an index on the key, and on the bookkeeping columns the next build asks
    about: built_at (the rows the last build wrote, read by the models after this one and by its key test) and
    synced_through (the latest sync it saw, which tells the syncs since). Without them each of those questions
    read the whole table, and a build asks a dozen of them.
    `pre_hook`: more statements to run first, after the lock. `synced_through`: false for a model whose rows do
    not carry the column (kept_by_record_columns). -#}
{% macro kept_by_record_config(key, pre_hook=[], synced_through=true) -%}
    {%- set bookkeeping = ['built_at', 'synced_through'] if synced_through else ['built_at'] -%}
    {%- set indexes = [] -%}
    {%- for column in [key] + bookkeeping -%}
        {%- do indexes.extend(postgres_only_indexes([column])) -%}
    {%- endfor -%}
    {{- return({
        "materialized": "incremental",
        "incremental_strategy": "delete+insert",
        "unique_key": key,
        "on_schema_change": "append_new_columns",
        "indexes": indexes,
        "pre_hook": ["{{ build_lock(this) }}"] + pre_hook,
    }) -}}
{%- endmacro %}


{#- Pre-hooks for when a build must write every record: empty the table first, so the build inserts every record
    instead of deleting each of them by its key (on DuckDB a delete by key costs far more per row than an
    insert). `empty_when_definitions_changed` for a model that works out its rows from the
    records (arguments as for definitions_fingerprint); `empty_when_upstream_rewrote_everything` for one that
    follows another kept record by record (`upstream`). -#}
{% macro empty_when_definitions_changed(stages=none, context=none, users=none, context_columns='home_currency_code') -%}
    {%- if is_incremental()
        and must_rewrite_every_record(definitions_fingerprint(stages, context, users, context_columns)) -%}
        delete from {{ this }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{% macro empty_when_upstream_rewrote_everything(upstream) -%}
    {%- set rewrote_everything = is_incremental() and (rewrites_every_record() or run_query(
        "select 1 from " ~ upstream ~ " having min(built_at) > (select max(built_at) from " ~ this ~ ")"
    ).rows | length > 0) -%}
    {%- if rewrote_everything -%}
        delete from {{ this }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{#- The pre-hook of a model that holds live records only: remove the records of `module` that a sync committed
    since the last build reported deleted. A deletion older than the version a row was worked out from was
    undone since (the record was restored and changed again): that row stays. (The table's modified_at is the
    version's; a version newer still, from those syncs, is written by the build itself.) -#}
{% macro delete_records_deleted_since_last_build(module, key) -%}
    {%- if rewrites_every_record() -%}
        select 1
    {%- else -%}
        delete from {{ this }}
        where {{ key }} in (
            select deletions.record_id
            from {{ ref('stg_zoho__deleted_records') }} as deletions
            inner join {{ this }} as kept
                on deletions.record_id = kept.{{ key }}
            where deletions.module = '{{ module }}'
                and deletions.load_id in {{ loads_since_last_build() }}
                and deletions.deleted_at >= kept.modified_at
        )
    {%- endif -%}
{%- endmacro %}


{#- When this build started, as a timestamp column: the rows a build writes carry it, so the models read from
    them (and the tests of the last build's rows) know which ones are new. -#}
{% macro build_started_at() -%}
    cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S") }}' as {{ dbt.type_timestamp() }})
{%- endmacro %}


{#- The bookkeeping columns of a model that works out its rows from the records, read by the macros above and
    below: when the build that wrote the row started, the last sync it had read (`synced_at`, the newest
    committed load of int_sync_context) and the definitions it worked the row out under. -#}
{% macro kept_by_record_columns(fingerprint, synced_at='context.synced_at') -%}
        {{ build_started_at() }} as built_at,
        {{ synced_at }} as synced_through,
        cast({{ fingerprint }} as {{ dbt.type_int() }}) as definitions_fingerprint
{%- endmacro %}


{#- Whether a build of this model must write every record: a first build or full refresh, or a table written by
    an older version of the model (without `column`, which every row of this version has). -#}
{% macro rewrites_every_record(column='built_at') -%}
    {%- if not is_incremental() or this is none -%}
        {{- return(true) -}}
    {%- endif -%}
    {%- if not execute -%}
        {{- return(false) -}}
    {%- endif -%}
    {{- return(not relation_has_column(this, column)) -}}
{%- endmacro %}


{#- Whether `relation` has a column of that name (any case). -#}
{% macro relation_has_column(relation, column) -%}
    {%- set columns = adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list -%}
    {{- return(column | lower in columns) -}}
{%- endmacro %}


{#- The syncs committed after the last one the model's rows had read (their synced_through), as the list of their
    load ids for `load_id in ...` (`(null)` when there are none). Literals, worked out when the model runs, rather
    than a subquery: DuckDB then pushes the filter into the scan of the raw table under a staging view and reads
    only the rows those syncs wrote instead of the whole table. A model that
    calls it declares `-- depends_on: ref('stg_zoho__loads')`. `kept`: the model whose rows tell (this one). -#}
{% macro loads_since_last_build(kept=none) -%}
    {%- set query -%}
        select load_id
        from {{ ref('stg_zoho__loads') }}
        where is_committed
            and loaded_at > (
                select coalesce(max(synced_through), cast('1900-01-01 00:00:00+00:00' as {{ type_timestamptz() }}))
                from {{ this if kept is none else kept }}
            )
        order by load_id
    {%- endset -%}
    {%- set literals = [] -%}
    {%- for load_id in (run_query(query).columns[0].values() if execute else []) -%}
        {%- do literals.append("'" ~ (load_id | string | replace("'", "''")) ~ "'") -%}
    {%- endfor -%}
    {{- return("(" ~ (literals | join(", ") if literals else "null") ~ ")") -}}
{%- endmacro %}


{#- For the tests over new syncs (unique_in_new_loads, not_null_in_new_loads): the table of the model `kept_by` that
    reads the tested staging model, whose synced_through marks the syncs already tested; none on a first build, a
    full refresh, or a table an older version of the model wrote without synced_through (it tells nothing).
    Named, not ref'd, so that the test runs before that model as usual: a failing test stops the build before
    it, and the next build tests those syncs again. -#}
{% macro table_marking_tested_loads(kept_by) -%}
    {%- if not execute or flags.FULL_REFRESH -%}
        {{- return(none) -}}
    {%- endif -%}
    {%- set node = graph.nodes.values() | selectattr('resource_type', 'equalto', 'model')
        | selectattr('name', 'equalto', kept_by) | first -%}
    {%- set kept = adapter.get_relation(node.database, node.schema, node.alias) -%}
    {{- return(kept if kept is not none and relation_has_column(kept, 'synced_through') else none) -}}
{%- endmacro %}


{#- The filter of a model worked out from another kept record by record (`upstream`, whose rows carry built_at):
    the records whose rows there were written after this model's last build. -#}
{% macro records_rewritten_since_last_build(upstream, key='deal_id') -%}
    {%- if rewrites_every_record() -%}
        1 = 1
    {%- else -%}
        {{ key }} in ({{ keys_rewritten_since_last_build(upstream, key) }})
    {%- endif -%}
{%- endmacro %}


{#- The keys of those records, as a query. The last build's start is a literal, worked out when the model runs:
    rows are appended build after build, so DuckDB skips every block of `upstream` that only older builds wrote
    instead of comparing each row with a subquery's result. -#}
{% macro keys_rewritten_since_last_build(upstream, key='deal_id') -%}
    {%- set last_build = run_query("select max(built_at) from " ~ this).columns[0].values()[0] if execute else none -%}
    select {{ key }}
    from {{ upstream }}
    where built_at > cast('{{ last_build.strftime("%Y-%m-%d %H:%M:%S.%f") if last_build else "1900-01-01 00:00:00" }}'
        as {{ dbt.type_timestamp() }})
{%- endmacro %}


{#- A small number that changes when a definition the rows depend on, other than the records themselves, changes:
    the org's time zone, and where given the stage layout (which stage is open, won or lost, and in which order),
    the `context_columns` of int_sync_context (the home currency; a comma-separated list) and the org's users.
    Rows carry it; a build whose number differs from theirs rewrites every record. -#}
{% macro definitions_fingerprint(stages=none, context=none, users=none, context_columns='home_currency_code') -%}
    {%- set described = [org_timezone()] -%}
    {%- set queries = [] -%}
    {%- if stages is not none -%}
        {%- do queries.append((stages, "select stage_id, pipeline, stage, stage_order, forecast_type from "
            ~ stages ~ " order by stage_id")) -%}
    {%- endif -%}
    {%- if context is not none -%}
        {%- do queries.append((context, "select " ~ context_columns ~ " from " ~ context)) -%}
    {%- endif -%}
    {%- if users is not none -%}
        {%- do queries.append((users, "select user_id from " ~ users ~ " order by user_id")) -%}
    {%- endif -%}
    {#- A relation not built yet (compiling alone, as sqlfluff's templater does) describes nothing. -#}
    {%- for relation, query in queries if execute and relation.type != 'cte' and load_relation(relation) is not none -%}
        {%- for row in run_query(query).rows -%}
            {%- do described.append(row.values() | join('|')) -%}
        {%- endfor -%}
    {%- endfor -%}
    {#- Seven hex digits: a positive number that fits a 32-bit integer column on every warehouse. -#}
    {{- return(local_md5(described | join('\n'))[:7] | int(base=16)) -}}
{%- endmacro %}


{#- Whether a build must rewrite every record: rewrites_every_record, or a row of this model written under other
    definitions than `fingerprint`. -#}
{% macro must_rewrite_every_record(fingerprint) -%}
    {%- if rewrites_every_record('definitions_fingerprint') -%}
        {{- return(true) -}}
    {%- endif -%}
    {%- set written_under_others = run_query(
        "select 1 from " ~ this ~ " where definitions_fingerprint <> " ~ fingerprint ~ " limit 1"
    ) -%}
    {{- return(written_under_others.rows | length > 0) -}}
{%- endmacro %}


{#- What a build of a model kept record by record works out once, at the top of the model, in place of the same
    three lines in each: the `fingerprint` its rows will carry (definitions_fingerprint, or more), whether this
    build writes every record (must_rewrite_every_record, or `also_rewrite_all`: another reason the model has),
    and the syncs committed since its last build (loads_since_last_build; none when every record is written, or
    for a model that follows another kept record by record rather than the loads: `by_load=false`). A model
    reading by load declares `-- depends_on: ref('stg_zoho__loads')`, as loads_since_last_build asks. -#}
{% macro kept_by_record_build(fingerprint, also_rewrite_all=false, by_load=true) -%}
    {%- set rewrite_all = must_rewrite_every_record(fingerprint) or also_rewrite_all -%}
    {{- return({
        'fingerprint': fingerprint,
        'rewrite_all': rewrite_all,
        'new_loads': loads_since_last_build() if by_load and not rewrite_all else none,
    }) -}}
{%- endmacro %}


{#- The filter of a model's source read by load: the rows the syncs since the last build wrote, or every row when
    the build writes every record. `build`: what kept_by_record_build returned. -#}
{% macro written_since_last_build(build, column='load_id') -%}
    {%- if not build.rewrite_all %}
    where {{ column }} in {{ build.new_loads }}
    {%- endif %}
{%- endmacro %}
