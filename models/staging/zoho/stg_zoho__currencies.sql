with

source as (

    select * from {{ source('zoho', 'currencies') }}

),

renamed as (

    select

        ----------  ids
        cast(iso_code as {{ dbt.type_string() }}) as currency_code,

        ----------  text
        cast(name as {{ dbt.type_string() }}) as currency_name,
        cast(symbol as {{ dbt.type_string() }}) as currency_symbol,

        ----------  numerics: units of this currency per one unit of the home currency
        cast(exchange_rate as {{ dbt.type_numeric() }}) as exchange_rate,

        ----------  booleans
        coalesce(cast(is_base as {{ dbt.type_boolean() }}), false) as is_home_currency,
        coalesce(cast(is_active as {{ dbt.type_boolean() }}), true) as is_active

    from source

)

select * from renamed
