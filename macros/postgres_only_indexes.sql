{#- An index on `columns` on PostgreSQL, where it finds a day's or a record's rows without reading the table, and
    none on DuckDB: there dbt-duckdb creates an ART index, which every later insert and delete has to maintain
    (rewriting two million rows by key took 40-55 s per model with one, and DuckDB's scans need none). -#}
{% macro postgres_only_indexes(columns) -%}
    {{- return([{"columns": columns}] if target.type == 'postgres' else []) -}}
{%- endmacro %}
