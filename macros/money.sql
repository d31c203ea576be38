{#-
    The value of an amount in the org's home currency, and the probability the weighted sums use.

    Zoho's Exchange_Rate is units of the record's currency per one unit of the home currency, so the home
    value is amount / rate. A negative amount, or one without a positive rate, is a data-quality issue
    (data_quality_issues lists it) and is left out of every sum: null here. A probability outside 0..1 (a
    percent outside 0..100 in the CRM) is left out of the weighted sums the same way.
-#}
{% macro home_amount(amount, rate_to_home) -%}
    case
        when {{ amount }} < 0 or {{ rate_to_home }} is null or {{ rate_to_home }} <= 0 then null
        else {{ divide(amount, rate_to_home) }}
    end
{%- endmacro %}


{% macro usable_probability(probability) -%}
    case when {{ probability }} < 0 or {{ probability }} > 1 then null else {{ probability }} end
{%- endmacro %}


{#-
    Units of the record's currency per one unit of the home currency. An org without multi-currency leaves
    Currency empty (everything is in the home currency then), and a home-currency record's rate is 1
    whatever the CRM stored.
-#}
{% macro rate_to_home(currency, exchange_rate, home_currency) -%}
    case
        when coalesce({{ currency }}, {{ home_currency }}) = {{ home_currency }}
            then cast(1 as {{ dbt.type_numeric() }})
        else {{ exchange_rate }}
    end
{%- endmacro %}
