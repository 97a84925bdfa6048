-- An abandoned cart's person made no purchase (fct_orders.is_purchase) from the session's start to
-- var('conversion_window_hours') after its end, and that window has closed by the end of the as-of day.
-- Rows returned are carts that break this.

with

carts as (

    select * from {{ ref('fct_abandoned_carts') }}

),

sessions as (

    select * from {{ ref('fct_web_sessions') }}

),

purchases as (

    select * from {{ ref('fct_orders') }}
    where is_purchase

)

select
    carts.cart_id,
    carts.abandoned_at
from carts
inner join sessions
    on carts.cart_id = sessions.session_id
where
    carts.abandoned_at >= {{ as_of_end() }}
    or exists (
        select purchases.order_id
        from purchases
        where
            purchases.person_id = carts.person_id
            and purchases.ordered_at between sessions.started_at and carts.abandoned_at
    )
