-- Recency, frequency, monetary value and their 1..5 scores per buyer as of var('as_of').
-- Scoring rules are in _marts__models.yml (model description); the segment grid is the seed rfm_segments.

with

orders as (

    select * from {{ ref('fct_orders') }}
    where order_date <= cast('{{ as_of() }}' as date)

),

segment_grid as (

    select * from {{ ref('rfm_segments') }}

),

buyers as (

    select
        person_id,
        max(order_date) filter (where is_purchase) as last_order_date,
        count(*) filter (where is_purchase) as frequency,
        cast(sum(net_amount) as decimal(18, 2)) as monetary
    from orders
    where person_id is not null
    group by person_id
    having count(*) filter (where is_purchase) >= 1

),

buyer_counts as (

    -- one row, joined to every buyer: DuckDB 2.0 computes a filtered count as a window over all rows
    -- (count(*) filter (...) over ()) row by row, quadratic (duckdb/duckdb#25935): 228 s at 1M customers
    select
        count(*) as buyers_count,
        count(*) filter (where frequency > 1) as repeat_buyers_count
    from buyers

),

measured as (

    select
        buyers.person_id,
        cast('{{ as_of() }}' as date) as as_of,
        date_diff('day', buyers.last_order_date, cast('{{ as_of() }}' as date)) as recency_days,
        buyers.frequency,
        buyers.monetary,
        {{ money_per('buyers.monetary', 'buyers.frequency') }} as avg_order_value,
        buyers.last_order_date,
        buyer_counts.buyers_count,
        buyer_counts.repeat_buyers_count
    from buyers
    cross join buyer_counts

),

ranked as (

    -- for each measure: how many buyers are strictly worse (`*_below`) and how many tie (`*_ties`);
    -- frequency is ranked among repeat buyers only (one-order buyers are a band of their own, F1)
    select
        *,
        rank() over (order by recency_days desc) - 1 as recency_below,
        count(*) over (partition by recency_days) as recency_ties,
        rank() over (partition by frequency > 1 order by frequency asc) - 1 as frequency_below,
        count(*) over (partition by frequency) as frequency_ties,
        rank() over (order by monetary asc) - 1 as monetary_below,
        count(*) over (partition by monetary) as monetary_ties
    from measured

),

scored as (

    -- R and M: mid-rank quintile, score = 1 + floor(5 * (below + ties / 2) / buyers), exact in integers.
    -- F: frequency bands. Most retail buyers order once (44.4% on the 10k demo, 50.5% of CDNOW as of 1998-06-30),
    -- and a quintile over that tie puts them all at its middle, so F1 would never occur; one order is F1, and
    -- repeat buyers get mid-rank quartiles among themselves, F2..F5.
    select
        *,
        least(5, 1 + (5 * (2 * recency_below + recency_ties)) // (2 * buyers_count)) as r_score,
        case
            when frequency = 1 then 1
            else least(5, 2 + (4 * (2 * frequency_below + frequency_ties)) // (2 * repeat_buyers_count))
        end as f_score,
        least(5, 1 + (5 * (2 * monetary_below + monetary_ties)) // (2 * buyers_count)) as m_score
    from ranked

),

combined as (

    -- frequency and monetary together, rounded half up: the column of the segment grid
    select
        *,
        (f_score + m_score + 1) // 2 as fm_score
    from scored

),

segmented as (

    -- the segment is the grid cell (r_score, fm_score) of the seed rfm_segments; a left join, so a cell
    -- missing from the grid shows as a null segment (a not_null test) instead of a lost buyer
    select
        combined.person_id,
        combined.as_of,
        combined.recency_days,
        combined.frequency,
        combined.monetary,
        combined.avg_order_value,
        cast(combined.r_score as integer) as r_score,
        cast(combined.f_score as integer) as f_score,
        cast(combined.m_score as integer) as m_score,
        segment_grid.rfm_segment,
        combined.last_order_date
    from combined
    left join segment_grid
        on
            combined.r_score = segment_grid.r_score
            and combined.fm_score = segment_grid.fm_score

)

select * from segmented
