{#-
    The median of `expr` over a group, as a numeric.

    Both adapters know the SQL standard's ordered-set aggregate (DuckDB's own `median` is not in PostgreSQL);
    PostgreSQL computes it in double precision, so the result is cast back to numeric for both to agree.
-#}
{% macro median(expr) -%}
    cast(percentile_cont(0.5) within group (order by {{ expr }}) as {{ dbt.type_numeric() }})
{%- endmacro %}
