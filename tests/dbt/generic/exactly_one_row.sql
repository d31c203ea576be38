{#- The model has exactly one row (a settings row that every mart cross-joins). -#}
{% test exactly_one_row(model) %}

select count(*) as row_count
from {{ model }}
having count(*) <> 1

{% endtest %}
