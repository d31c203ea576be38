{#- An index on `columns` on PostgreSQL, where it finds a day's or a record's rows without reading the table, and
    none on DuckDB: there dbt-duckdb creates an ART index, which every later insert and delete has to maintain
    (a rewrite of every record by key pays for that index row by row, and DuckDB's scans need none). -#}
{% macro postgres_only_indexes(columns) -%}
    {{- return([{"columns": columns}] if target.type == 'postgres' else []) -}}
{%- endmacro %}
