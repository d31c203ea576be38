{#-
    numerator / denominator as a numeric, null when the denominator is zero or null.

    The adapters disagree on plain `/`: PostgreSQL truncates integer / integer (1 / 3 = 0) and raises on division
    by zero, DuckDB divides in floating point and yields inf, NaN or null. Casting both sides to numeric and
    nullif-ing the denominator makes every ratio in the marts mean the same thing on both.
-#}
{% macro divide(numerator, denominator) -%}
    cast(
        cast({{ numerator }} as {{ dbt.type_numeric() }})
        / nullif(cast({{ denominator }} as {{ dbt.type_numeric() }}), 0)
        as {{ dbt.type_numeric() }}
    )
{%- endmacro %}
