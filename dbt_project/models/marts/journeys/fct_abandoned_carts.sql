-- One row per abandoned cart: a web session with an add-to-cart that did not convert (fct_web_sessions.is_converted:
-- no purchase by its person from its start to var('conversion_window_hours') after its end), once those hours
-- have passed by the end of var('as_of'). With its products and value at today's prices: an audience for a
-- cart-recovery sync (the rows with a person_id; an anonymous cart cannot be reached).

with

web_sessions as (

    select * from {{ ref('fct_web_sessions') }}
    where
        add_to_carts > 0
        and not is_converted
        and ended_at + interval '{{ var("conversion_window_hours") }} hours' < {{ as_of_end() }}

),

cart_items as (

    -- the session's add-to-cart products (fct_web_sessions.cart_product_ids): web events are read once, there
    select
        session_id,
        unnest(cart_product_ids) as product_id
    from web_sessions

),

products as (

    select * from {{ ref('stg_shop__products') }}

),

cart_lines as (

    select
        cart_items.session_id,
        count(*) as items_count,
        count(distinct cart_items.product_id) as products_count,
        string_agg(distinct cart_items.product_id, ',' order by cart_items.product_id) as product_ids,
        cast(coalesce(sum(products.price), 0) as decimal(18, 2)) as cart_value,
        count(*) filter (where products.price is null) as unpriced_items
    from cart_items
    left join products
        on cart_items.product_id = products.product_id
    group by cart_items.session_id

),

final as (

    select
        web_sessions.session_id as cart_id,
        web_sessions.person_id,
        web_sessions.session_date,
        web_sessions.channel,
        web_sessions.campaign,
        web_sessions.device_type,
        web_sessions.landing_page,
        web_sessions.ended_at + interval '{{ var("conversion_window_hours") }} hours' as abandoned_at,
        cart_lines.items_count,
        cart_lines.products_count,
        cart_lines.product_ids,
        cart_lines.cart_value,
        cart_lines.unpriced_items
    from web_sessions
    inner join cart_lines
        on web_sessions.session_id = cart_lines.session_id

)

select * from final
