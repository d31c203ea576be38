{#-
    Pass-through columns: Zoho fields (the org's custom fields above all) that the marts carry as they are, named by
    their Zoho API names in dbt_project.yml:

        vars:
          zoho_deal_pass_through_columns: ['Region', 'Product_Line']  # deals, deal_daily_states (as of each day)
          zoho_lead_pass_through_columns: ['Region']                  # leads

    Each becomes the column dlt loaded the field into (zoho_column_name: Product_Line -> product_line), with the
    type it has in zoho_raw (text, a number, a date, ...; zoho_portable_type), in stg_zoho__deals/deal_versions
    (or the leads'), and from there in the marts. A column the raw table does not have yet (a field no sync has
    read a record of) is text and empty until it has.

    The marts' contracts stay enforced: dbt takes a contract's columns from the YAML only, which cannot vary with
    a var, so each mart's pre-hook (zoho_pass_through_pre_hook) adds its pass-through columns to the contract
    before dbt checks the model's columns against it, with the type the model casts them to. A model then still
    fails its build when any column, fixed or passed through, is missing, extra or of another type. (This relies
    on dbt rendering pre-hooks in the materialization's own context, whose `model` the contract check and the
    contract's DDL read; tests/test_custom_fields.py builds it on DuckDB and PostgreSQL.)

    Changing a var rebuilds what depends on it: a mart whose pass-through columns (names and types) differ from
    the table's drops the old ones and writes every row again; int_deal_history, which carries them by change
    under a prefix (so they never clash with its own columns), folds them into its definitions fingerprint
    (zoho_pass_through_fingerprint), so it rewrites every deal, and the models kept deal by deal after it follow.
-#}


{#- The column dlt names a Zoho field: dlt's default snake_case naming (dlt.common.normalizers.naming.snake_case) of
    each part between double underscores (Owner__id -> owner__id, Reason_For_Loss__s -> reason_for_loss__s):
    a few symbols replaced, anything else not a letter, digit or underscore made an underscore, camel case split,
    lower case, a leading digit prefixed with and trailing underscores replaced by x, runs of underscores made one.
    PostgreSQL shortens names longer than 63 characters with a hash: those are refused here. -#}
{% macro zoho_column_name(api_name) -%}
    {%- set re = modules.re -%}
    {%- set parts = [] -%}
    {%- for part in (api_name | string).split('__') if part.strip() -%}
        {%- set name = part.strip() | replace('+', 'x') | replace('-', '_') | replace('*', 'x') | replace('@', 'a')
            | replace('|', 'l') -%}
        {%- set name = re.sub('[^a-zA-Z0-9_]+', '_', name) -%}
        {%- set name = re.sub('([^_])([A-Z][a-z]+)', '\\1_\\2', name) -%}
        {%- set name = re.sub('([a-z0-9])([A-Z])', '\\1_\\2', name) | lower -%}
        {%- set name = '_' ~ name if re.match('[0-9]', name) else name -%}
        {%- set stripped = name.rstrip('_') -%}
        {%- do parts.append(re.sub('__+', '_', stripped ~ 'x' * (name | length - stripped | length))) -%}
    {%- endfor -%}
    {%- set column = parts | join('__') -%}
    {%- if not column or column | length > 63 -%}
        {{- exceptions.raise_compiler_error("Zoho field '" ~ api_name ~ "' cannot be a pass-through column: its name"
            ~ " is empty or longer than PostgreSQL's 63 characters") -}}
    {%- endif -%}
    {{- return(column) -}}
{%- endmacro %}


{#- The pass-through column names of `module` ('deal' or 'lead'), from var('zoho_<module>_pass_through_columns'), in
    the order given. Refused: a var that is not a list of API names, and a name one of the module's models has
    already (e.g. Amount, or Deal_Type, which stg_zoho__deals has from Zoho's Type). -#}
{% macro zoho_pass_through_names(module) -%}
    {%- set var_name = 'zoho_' ~ module ~ '_pass_through_columns' -%}
    {%- set api_names = var(var_name, []) -%}
    {%- if api_names is string or api_names is mapping or api_names is not iterable -%}
        {{- exceptions.raise_compiler_error(var_name ~ " must be a list of Zoho API names, e.g. ['Region']") -}}
    {%- endif -%}
    {%- set names = [] -%}
    {%- for api_name in api_names -%}
        {%- set name = zoho_column_name(api_name) -%}
        {%- if name not in names -%}
            {%- do names.append(name) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if execute and names -%}
        {%- set models = {'deal': ['stg_zoho__deals', 'deals', 'deal_daily_states'],
                          'lead': ['stg_zoho__leads', 'leads']}[module] -%}
        {%- for node in graph.get('nodes', {}).values() if node.resource_type == 'model' and node.name in models -%}
            {%- for name in names if name in node.columns -%}
                {{- exceptions.raise_compiler_error(var_name ~ ": " ~ name ~ " is a column of " ~ node.name
                    ~ " already; pass through another field") -}}
            {%- endfor -%}
        {%- endfor -%}
    {%- endif -%}
    {{- return(names) -}}
{%- endmacro %}


{#- The type a pass-through column is cast to, from the type of its column in a relation: text, a whole number, a
    number, true/false, a date or an instant; anything else (JSON: a multi-select picklist) as text. -#}
{% macro zoho_portable_type(column) -%}
    {%- set dtype = column.dtype | lower -%}
    {%- if column.is_string() or 'char' in dtype or dtype in ('text', 'string') -%}
        {{- return(dbt.type_string()) -}}
    {%- elif column.is_integer() -%}
        {{- return(dbt.type_bigint()) -}}
    {%- elif column.is_number() -%}
        {#- Not dbt.type_float(): that is a 4-byte FLOAT on DuckDB. -#}
        {{- return('double precision') -}}
    {%- elif 'bool' in dtype -%}
        {{- return(dbt.type_boolean()) -}}
    {%- elif dtype == 'date' -%}
        {{- return('date') -}}
    {%- elif 'timestamp' in dtype -%}
        {{- return(type_timestamptz()) -}}
    {%- endif -%}
    {{- return(dbt.type_string()) -}}
{%- endmacro %}


{#- The pass-through columns of `module` as [{name, data_type, loaded}], typed from their columns in `relation` (named
    with `prefix`); text, and not `loaded`, for one the relation does not have, or while it does not exist. -#}
{% macro zoho_pass_through_columns(module, relation, prefix='') -%}
    {%- set names = zoho_pass_through_names(module) -%}
    {%- set types = {} -%}
    {%- set existing = load_relation(relation) if execute and names and relation.type != 'cte' else none -%}
    {%- if existing is not none -%}
        {%- for column in adapter.get_columns_in_relation(existing) -%}
            {%- do types.update({column.name | lower: zoho_portable_type(column)}) -%}
        {%- endfor -%}
    {%- endif -%}
    {%- set columns = [] -%}
    {%- for name in names -%}
        {%- do columns.append({'name': name, 'data_type': types.get(prefix ~ name, dbt.type_string()),
                               'loaded': (prefix ~ name) in types}) -%}
    {%- endfor -%}
    {{- return(columns) -}}
{%- endmacro %}


{#- The select list entries of the pass-through columns, each after a comma: the columns `prefix` ~ name of
    `table_alias`, cast to their type in `relation`, named `as_prefix` ~ name. In staging (`from_raw`) a column the
    raw table lacks is null, with a warning once the table exists: a name misspelt, or a field no sync has read a
    record of yet. -#}
{% macro zoho_pass_through_select(module, relation, table_alias=none, prefix='', as_prefix='', from_raw=false) -%}
    {%- set columns = zoho_pass_through_columns(module, relation, prefix) -%}
    {%- set raw_exists = from_raw and columns and execute and relation.type != 'cte'
        and load_relation(relation) is not none -%}
    {%- for column in columns %},
        {% if from_raw and not column.loaded -%}
        {%- if raw_exists -%}
            {%- do exceptions.warn("zoho_" ~ module ~ "_pass_through_columns: " ~ relation ~ " has no column "
                ~ column.name ~ " (is the field's API name right, and has a sync run since it was added?); it stays"
                ~ " empty until it has") -%}
        {%- endif -%}
        cast(null as {{ column.data_type }}) as {{ as_prefix ~ column.name }}
        {%- else -%}
        cast({{ table_alias ~ '.' if table_alias }}{{ prefix ~ column.name }} as {{ column.data_type }})
            as {{ as_prefix ~ column.name }}
        {%- endif -%}
    {%- endfor -%}
{%- endmacro %}


{#- The same columns carried on as they are, each after a comma: `table_alias`.`prefix` ~ name. -#}
{% macro zoho_pass_through_list(module, table_alias, prefix='') -%}
    {%- for name in zoho_pass_through_names(module) %},
        {{ table_alias }}.{{ prefix ~ name }}
    {%- endfor -%}
{%- endmacro %}


{#- `fingerprint` (definitions_fingerprint) folded with the pass-through columns of `module` as typed in `relation`:
    the same number while there are none, so an org without pass-through columns keeps its rows. -#}
{% macro zoho_pass_through_fingerprint(fingerprint, module, relation) -%}
    {%- set columns = zoho_pass_through_columns(module, relation) -%}
    {%- if not columns -%}
        {{- return(fingerprint) -}}
    {%- endif -%}
    {%- set described = [fingerprint | string] -%}
    {%- for column in columns -%}
        {%- do described.append(column.name ~ ' ' ~ column.data_type) -%}
    {%- endfor -%}
    {{- return(local_md5(described | join('\n'))[:7] | int(base=16)) -}}
{%- endmacro %}


{#- The columns of this model's table beyond the ones its YAML declares, as {name: type}: the pass-through
    columns it was built with. For a model whose YAML declares every column (one with a contract). -#}
{% macro zoho_pass_through_columns_built(relation) -%}
    {%- set declared = [] -%}
    {%- for name, column in model['columns'].items() if not (column.meta or {}).get('zoho_pass_through') -%}
        {%- do declared.append(name | lower) -%}
    {%- endfor -%}
    {%- set built = {} -%}
    {%- for column in adapter.get_columns_in_relation(relation) if column.name | lower not in declared -%}
        {%- do built.update({column.name | lower: zoho_portable_type(column)}) -%}
    {%- endfor -%}
    {{- return(built) -}}
{%- endmacro %}


{#- Whether a build of this mart (`relation`: this) must write every row because its pass-through columns changed:
    the table was built with other ones, or of other types, than `module`'s now (typed from `upstream`, where they
    are named with `prefix`). -#}
{% macro zoho_pass_through_changed(module, relation, upstream, prefix='') -%}
    {%- if not execute or not is_incremental() -%}
        {{- return(false) -}}
    {%- endif -%}
    {%- set wanted = {} -%}
    {%- for column in zoho_pass_through_columns(module, upstream, prefix) -%}
        {%- do wanted.update({column.name: column.data_type}) -%}
    {%- endfor -%}
    {{- return(zoho_pass_through_columns_built(relation) != wanted) -}}
{%- endmacro %}


{#- The pre-hook of a mart with pass-through columns (`upstream`: the model they come from). When they changed
    since the table was built, it drops the old ones and empties the table, which the build then writes whole
    (the model's SQL asks zoho_pass_through_changed too, before this runs); the materialization adds the new
    columns (on_schema_change: append_new_columns). Either way it adds them to the model's enforced contract,
    which dbt checks after the pre-hooks. -#}
{% macro zoho_pass_through_pre_hook(module, upstream, prefix='') -%}
    {%- set columns = zoho_pass_through_columns(module, upstream, prefix) -%}
    {%- set changed = zoho_pass_through_changed(module, this, upstream, prefix) -%}
    {%- if changed -%}
        {%- for name in zoho_pass_through_columns_built(this) -%}
            {%- do run_query('alter table ' ~ this ~ ' drop column ' ~ adapter.quote(name)) -%}
        {%- endfor -%}
    {%- endif -%}
    {%- for column in columns -%}
        {%- do model['columns'].update({column.name: {
            'name': column.name, 'data_type': column.data_type, 'constraints': [], 'quote': none,
            'description': 'Passed through from the Zoho field of that API name (var zoho_' ~ module
                ~ '_pass_through_columns).',
            'meta': {'zoho_pass_through': true}, 'tags': []}}) -%}
    {%- endfor -%}
    {%- if changed -%}
        delete from {{ this }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{#- The pre-hook of a model kept record by record that carries the pass-through columns of `module` (typed from
    `relation`) in its rows, named with `prefix`: empty_when_definitions_changed (macros/kept_by_record.sql) with the
    fingerprint folded with them (zoho_pass_through_fingerprint), which its rows carry; emptied, the table also
    loses the columns of pass-through columns no longer wanted (the prefix tells them). -#}
{% macro empty_when_definitions_or_pass_through_changed(module, relation, prefix, stages=none, context=none) -%}
    {%- if is_incremental() and must_rewrite_every_record(
        zoho_pass_through_fingerprint(definitions_fingerprint(stages, context), module, relation)) -%}
        {%- set wanted = zoho_pass_through_names(module) -%}
        {%- for column in adapter.get_columns_in_relation(this) -%}
            {%- set name = column.name | lower -%}
            {%- if name.startswith(prefix) and name[prefix | length:] not in wanted -%}
                {%- do run_query('alter table ' ~ this ~ ' drop column ' ~ adapter.quote(column.name)) -%}
            {%- endif -%}
        {%- endfor -%}
        delete from {{ this }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
