{#-
    open, won or lost, from the forecast type of the deal's stage. Stage names are configurable per org; the
    stage's forecast type is what Zoho itself uses to tell won from lost. A stage no pipeline of the layout
    lists cannot be closed, so it counts as open (data_quality_issues reports such deals).
-#}
{% macro deal_status(forecast_type) -%}
    case {{ forecast_type }}
        when 'Closed Won' then 'won'
        when 'Closed Lost' then 'lost'
        else 'open'
    end
{%- endmacro %}
