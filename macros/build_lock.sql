{#- Taken first in an incremental model's pre-hook, inside the build's transaction: two `dbt build`s at once
    (two schedulers, a rerun by hand) would otherwise both delete the same days and both insert them again.
    PostgreSQL holds the lock until the build commits; DuckDB lets one process write a file at a time anyway. -#}
{% macro build_lock(relation) -%}
    {{- return(adapter.dispatch('build_lock', 'crm_intelligence')(relation)) -}}
{%- endmacro %}


{% macro default__build_lock(relation) -%}
    select 1
{%- endmacro %}


{% macro postgres__build_lock(relation) -%}
    select pg_advisory_xact_lock(hashtext('{{ relation }}'))
{%- endmacro %}
